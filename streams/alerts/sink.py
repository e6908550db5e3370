"""``driftwatch webhook-sink``: a local webhook receiver that verifies and logs every delivery.

``driftwatch up`` runs one so the demo's alert rules have somewhere to go (it adds a
webhook ``local`` pointing here to the demo config its children read, with a fresh secret
in a file both share). It is also a reference receiver for your own webhooks: it does
exactly what docs/alerts.md asks of one —

1. verify the ``X-Driftwatch-Signature`` HMAC over the raw body (401 when it does not verify:
   the worker then fails the delivery instead of pretending it arrived);
2. deduplicate on ``Idempotency-Key`` (delivery is at-least-once: a repeat is answered 200
   and logged as a duplicate, not acted on twice);
3. log one line per delivery: ``ALERT FIRING wine many_features_drift ... (signature ok)``.

With ``--jsonl FILE`` every delivery is also appended as one JSON object (headers that
matter, whether the signature verified, the parsed body) — what the tests read.

    DRIFTWATCH_WEBHOOK_SINK_SECRET=s3cret driftwatch webhook-sink --port 9099
    driftwatch webhook-sink --port 9099 --secret-file /run/secrets/webhook
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TextIO

from detectors.errors import ServiceError
from streams.alerts.signing import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, verify_signature

log = logging.getLogger("driftwatch.webhook-sink")

SECRET_ENV = "DRIFTWATCH_WEBHOOK_SINK_SECRET"
DEFAULT_PORT = 9099
PATH = "/driftwatch"
MAX_BODY = 1 << 20  # an alert is a few kB; refuse anything absurd
LINE_PREFIX = "ALERT"  # `driftwatch up` relays the sink's lines that start with this


class SinkError(ServiceError):
    """The sink cannot start (no secret, port taken)."""


def describe(payload: dict[str, Any]) -> str:
    """One human line for a delivered alert (generic JSON, Alertmanager or Slack format).

    >>> describe({"status": "firing", "model": "wine", "rule": "r", "summary": "s", "severity": "warning"})
    'FIRING [warning] wine r: s'
    """
    if "alerts" in payload and "version" in payload:  # Alertmanager
        a = (payload.get("alerts") or [{}])[0]
        lab, ann = a.get("labels", {}), a.get("annotations", {})
        return (
            f"{str(payload.get('status', '?')).upper()} [{lab.get('severity', '?')}] {lab.get('model', '?')} "
            f"{lab.get('alertname', '?')}: {ann.get('summary', '')}"
        )
    if "blocks" in payload:  # Slack
        return str(payload.get("text", ""))
    repeat = " (reminder)" if payload.get("repeat") else ""
    return (
        f"{str(payload.get('status', '?')).upper()}{repeat} [{payload.get('severity', '?')}] "
        f"{payload.get('model', '?')} {payload.get('rule', '?')}: {payload.get('summary', '')}"
    )


class WebhookSink:
    """A threaded HTTP server on ``host:port`` that verifies, deduplicates and logs deliveries."""

    def __init__(
        self,
        secret: bytes,
        host: str = "127.0.0.1",
        port: int = 0,
        jsonl: Path | None = None,
        out: TextIO | None = None,
    ) -> None:
        if not secret:
            raise SinkError(f"no webhook secret: set {SECRET_ENV} (or pass --secret-file)")
        self.secret = secret
        self.jsonl = jsonl
        self.out: TextIO = out or sys.stdout
        self.seen: set[str] = set()
        self.deliveries: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, fmt: str, *args: Any) -> None:  # the sink prints its own lines
                pass

            def do_POST(self) -> None:  # http.server's name
                n = int(self.headers.get("Content-Length") or 0)
                if n > MAX_BODY:
                    self.send_response(413)
                    self.end_headers()
                    return
                body = self.rfile.read(n)
                code = sink.receive(self.path, dict(self.headers.items()), body)
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

        try:
            self.server = ThreadingHTTPServer((host, port), Handler)
        except OSError as e:
            raise SinkError(f"cannot listen on {host}:{port}: {e.strerror}") from None
        self.server.daemon_threads = True
        bound_host, self.port = self.server.server_address[:2]
        # an AF_INET server's address: the host is text (typeshed allows bytes for other families)
        self.host = bound_host.decode() if isinstance(bound_host, bytes) else bound_host

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}{PATH}"

    def receive(self, path: str, headers: dict[str, str], body: bytes) -> int:
        """Verify, deduplicate and log one delivery; the HTTP status to answer."""
        h = {k.lower(): v for k, v in headers.items()}
        key = h.get(IDEMPOTENCY_HEADER.lower(), "")
        ok = verify_signature(self.secret, body, h.get(SIGNATURE_HEADER.lower(), ""))
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
        with self._lock:
            duplicate = ok and key in self.seen
            if ok and key:
                self.seen.add(key)
            rec = {
                "path": path,
                "idempotency_key": key,
                "signature_ok": ok,
                "duplicate": duplicate,
                "event": h.get("x-driftwatch-event", ""),
                "attempt": h.get("x-driftwatch-attempt", ""),
                "payload": payload,
            }
            self.deliveries.append(rec)
            if not ok:
                line = f"REJECTED delivery {key or '(no idempotency key)'}: signature does not verify (answered 401)"
            elif not isinstance(payload, dict):
                line = f"REJECTED delivery {key}: body is not a JSON object (answered 400)"
            else:
                what = describe(payload)
                line = (
                    f"{LINE_PREFIX} {what} (signature ok, id {key}"
                    f"{', duplicate: already received' if duplicate else ''})"
                )
                link = payload.get("dashboard_url")
                if link and not duplicate:
                    line += f"\n      open: {link}"
            print(line, file=self.out, flush=True)
            if self.jsonl is not None:
                with open(self.jsonl, "a", encoding="utf-8") as f:
                    f.write(json.dumps(rec, default=str) + "\n")
        if not ok:
            return 401
        return 200 if isinstance(payload, dict) else 400

    def serve_forever(self) -> None:
        self.server.serve_forever(poll_interval=0.2)

    def start(self) -> WebhookSink:
        """Serve on a background thread (tests)."""
        threading.Thread(target=self.serve_forever, name="webhook-sink", daemon=True).start()
        return self

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    parser.add_argument(
        "--secret-file",
        type=Path,
        default=None,
        help=f"file holding the shared HMAC secret (default: the {SECRET_ENV} variable)",
    )
    parser.add_argument("--jsonl", type=Path, default=None, help="also append every delivery to this JSON-lines file")


def run(args: argparse.Namespace) -> int:
    if args.secret_file is not None:
        try:
            secret = args.secret_file.read_text().strip().encode()
        except OSError as e:
            print(f"driftwatch webhook-sink: cannot read {args.secret_file}: {e.strerror}", file=sys.stderr)
            return 2
    else:
        secret = os.environ.get(SECRET_ENV, "").strip().encode()
    try:
        sink = WebhookSink(secret, args.host, args.port, args.jsonl)
    except SinkError as e:
        print(f"driftwatch webhook-sink: {e}", file=sys.stderr)
        return 2
    print(f"webhook-sink: listening on {sink.url}; verifying signatures, logging each delivery", flush=True)
    try:
        sink.serve_forever()
    finally:
        sink.server.server_close()
    return 0
