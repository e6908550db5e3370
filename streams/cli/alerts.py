"""``driftwatch alerts``: list alerts and deliveries, silence and unsilence.

Reads and writes the alert store under the worker's ``state_dir``
(``DRIFTWATCH_STATE_DIR``, default the project's ``.driftwatch``, see
:func:`streams.settings.default_state_dir`); a running worker sees a new silence
at its next window.

    driftwatch alerts list                       # pending and firing alerts
    driftwatch alerts list --status all --json
    driftwatch alerts deliveries --endpoint ops-slack
    driftwatch alerts silence --match model=iris --match feature='petal_*' --for 2h --comment "retraining"
    driftwatch alerts silences
    driftwatch alerts unsilence 3f2a9c
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from streams.alerts.lifecycle import STATUSES, iso
from streams.alerts.rules import parse_duration
from streams.alerts.store import AlertStore, StoreError, default_path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="worker state folder (default: DRIFTWATCH_STATE_DIR or the project's .driftwatch)",
    )
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    p = sub.add_parser("list", help="alerts and their state")
    p.add_argument(
        "--status",
        default="pending,firing",
        help=f"comma-separated of {', '.join(STATUSES[1:])}, or 'all' (default: pending,firing)",
    )
    p.add_argument("--model", default=None)
    p.add_argument("--json", action="store_true", help="JSON lines")

    p = sub.add_parser("deliveries", help="the webhook delivery log (newest first)")
    p.add_argument("--endpoint", default=None, help="one endpoint (or 'kafka' for the alerts topic)")
    p.add_argument("--status", choices=["pending", "delivered", "failed"], default=None)
    p.add_argument("--limit", type=int, default=30)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("silences", help="active silences (store and config)")
    p.add_argument("--all", action="store_true", help="include expired ones")
    p.add_argument(
        "--config",
        type=Path,
        default=None,
        help="monitor config whose silences to show too (default: DRIFTWATCH_MONITORS)",
    )
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("silence", help="silence matching alerts until an expiry")
    p.add_argument(
        "--match",
        action="append",
        required=True,
        metavar="LABEL=VALUE",
        help="label matcher, glob allowed (repeat: all must match), e.g. model=iris, feature='petal_*'",
    )
    when = p.add_mutually_exclusive_group(required=True)
    when.add_argument("--for", dest="duration", help="how long, e.g. 30m, 2h, 7d")
    when.add_argument("--until", help="ISO 8601 time, e.g. 2025-06-01T08:00:00Z")
    p.add_argument("--comment", default="")
    p.add_argument("--by", default=None, help="who (default: the current user)")

    p = sub.add_parser("unsilence", help="remove a silence (id or unique prefix)")
    p.add_argument("id")


def _store_path(args: argparse.Namespace) -> Path:
    state_dir = args.state_dir
    if state_dir is None:
        from streams.settings import Settings

        state_dir = Settings().state_dir  # absolute: the same store from any folder
    return default_path(Path(state_dir).expanduser().resolve())


def _store(args: argparse.Namespace) -> AlertStore:
    return AlertStore(_store_path(args))


def _parse_until(text: str) -> int:
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise SystemExit(f"driftwatch alerts silence: --until {text!r} is not an ISO 8601 time") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1e9)


def _matchers(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        k, sep, v = item.partition("=")
        if not sep or not k.strip() or not v.strip():
            raise SystemExit(f"driftwatch alerts silence: --match {item!r} must be LABEL=VALUE")
        out[k.strip()] = v.strip()
    return out


def _table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    for r in [header, *rows]:
        print("  ".join(str(x).ljust(w) for x, w in zip(r, widths)).rstrip())


def _config_silences(path: Path | None) -> list:
    from streams.alerts.service import config_silences
    from streams.worker.monitors import ConfigError, load_monitors

    if path is None:
        from streams.settings import Settings

        path = Settings().monitors
        if not Path(path).exists():
            return []
    try:
        return config_silences(load_monitors(path).silences)
    except ConfigError as e:
        print(f"(config silences not shown: {str(e).splitlines()[0]})", file=sys.stderr)
        return []


def run(args: argparse.Namespace) -> int:
    path = _store_path(args)
    if args.action == "list" and not path.exists():  # reading creates nothing (no stray state folder)
        if not getattr(args, "json", False):
            print(f"no alerts: no alert store at {path} yet (a worker creates it when it starts)")
        return 0
    try:
        store = _store(args)
    except StoreError as e:
        print(e, file=sys.stderr)
        return 1
    with store:
        if args.action == "list":
            wanted = None if args.status == "all" else [s.strip() for s in args.status.split(",")]
            bad = [s for s in wanted or [] if s not in STATUSES]
            if bad:
                print(f"unknown status {bad}; use {', '.join(STATUSES[1:])} or all", file=sys.stderr)
                return 2
            states = store.states(model=args.model, statuses=wanted).values()
            if args.json:
                for s in states:
                    print(json.dumps(s.to_dict()))
                return 0
            if not states:
                print("no alerts" + (f" with status {args.status}" if wanted else ""))
                return 0
            _table(
                [
                    [
                        s.status,
                        s.severity,
                        s.key,
                        iso(s.firing_since_ns or s.pending_since_ns),
                        str(s.consecutive),
                        ("silenced " if s.silenced else "") + s.summary[:80],
                    ]
                    for s in states
                ],
                ["STATUS", "SEVERITY", "KEY", "SINCE", "WINDOWS", "SUMMARY"],
            )
            return 0
        if args.action == "deliveries":
            rows = store.deliveries(target=args.endpoint, status=args.status, limit=args.limit)
            if args.json:
                for r in rows:
                    print(
                        json.dumps(
                            {
                                "endpoint": r.target,
                                "idempotency_key": r.event_id,
                                "event": r.event_status,
                                "alert_key": r.alert_key,
                                "status": r.status,
                                "attempts": r.attempts,
                                "http_status": r.http_status,
                                "last_error": r.last_error,
                                "created": iso(r.created_ns),
                                "delivered": iso(r.delivered_ns) if r.delivered_ns else None,
                            }
                        )
                    )
                return 0
            if not rows:
                print("no deliveries")
                return 0
            _table(
                [
                    [
                        iso(r.created_ns),
                        r.target,
                        r.event_status,
                        r.status,
                        str(r.attempts),
                        str(r.http_status or ""),
                        r.alert_key,
                        r.last_error[:60],
                    ]
                    for r in rows
                ],
                ["QUEUED", "ENDPOINT", "EVENT", "STATUS", "ATTEMPTS", "HTTP", "ALERT", "LAST ERROR"],
            )
            return 0
        if args.action == "silences":
            now = time.time_ns()
            sil = [*_config_silences(args.config), *store.silences(include_expired=args.all, now_ns=now)]
            if not args.all:
                sil = [s for s in sil if s.ends_ns > now]
            if args.json:
                for s in sil:
                    print(
                        json.dumps(
                            {
                                "id": s.id,
                                "match": s.matchers,
                                "starts": iso(s.starts_ns),
                                "ends": iso(s.ends_ns),
                                "comment": s.comment,
                                "by": s.created_by,
                                "source": s.source,
                            }
                        )
                    )
                return 0
            if not sil:
                print("no silences")
                return 0
            _table(
                [
                    [
                        s.id,
                        s.source,
                        ",".join(f"{k}={v}" for k, v in s.matchers.items()),
                        iso(s.ends_ns),
                        s.created_by,
                        s.comment,
                    ]
                    for s in sil
                ],
                ["ID", "SOURCE", "MATCH", "UNTIL", "BY", "COMMENT"],
            )
            return 0
        if args.action == "silence":
            matchers = _matchers(args.match)
            if args.duration:
                try:
                    seconds = float(parse_duration(args.duration))
                except ValueError as e:
                    print(f"driftwatch alerts silence: --for: {e}", file=sys.stderr)
                    return 2
                ends = time.time_ns() + int(seconds * 1e9)
            else:
                ends = _parse_until(args.until)
            try:
                silence = store.add_silence(
                    matchers, ends, comment=args.comment, created_by=args.by or getpass.getuser()
                )
            except ValueError as e:
                print(f"driftwatch alerts silence: {e}", file=sys.stderr)
                return 2
            print(f"silence {silence.id} until {iso(silence.ends_ns)}")
            return 0
        if args.action == "unsilence":
            if not store.remove_silence(args.id):
                print(f"no single silence with id {args.id!r} (see `driftwatch alerts silences`)", file=sys.stderr)
                return 1
            print(f"removed silence {args.id}")
            return 0
    return 2
