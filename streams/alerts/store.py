"""The delivery outbox, silences and a local copy of alert state: one SQLite file under ``state_dir``.

The outbox stays local: every firing/resolve is queued here, one row per delivery target
(the alerts Kafka topic, each routed webhook), and each worker delivers what it queued
(also after the partition moved on). SQLite is in the standard library, transactional,
survives a SIGKILL, and lets the ``driftwatch alerts`` command (another process) add a
silence the running worker sees at its next window and read the delivery log.

The alert state itself — per alert its status and counts, per model version the last
evaluated window — follows its input partition to any worker through a Kafka changelog
(:mod:`streams.alerts.partitions`); this file keeps a copy of the states of the partitions
the worker owns (``driftwatch alerts list``). Without that changelog (tests, a single
process) this file is the state: one transaction per evaluated window writes the new alert
states, the outbox rows and the window mark, so a crash either happened before (the window
is re-evaluated after restart) or after (the replayed window is recognised and skipped).
``UNIQUE(target, event_id)`` makes an announcement queued twice in one file count once.

Default path: ``<state_dir>/alerts/alerts.sqlite3`` (:func:`default_path`). Several
workers may share it on one host (WAL mode, busy timeout; one of them delivers the outbox).
"""

from __future__ import annotations

import fnmatch
import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from detectors.errors import StorageError
from streams.alerts.lifecycle import AlertState

__all__ = ["AlertStore", "OutboxRow", "Silence", "StoreError", "default_path"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS alert_state (
    key TEXT PRIMARY KEY, model TEXT NOT NULL, version TEXT NOT NULL, rule TEXT NOT NULL,
    status TEXT NOT NULL, data TEXT NOT NULL, updated_ns INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS alert_state_mv ON alert_state(model, version);
CREATE TABLE IF NOT EXISTS window_mark (
    model TEXT NOT NULL, version TEXT NOT NULL, last_window_ns INTEGER NOT NULL,
    PRIMARY KEY (model, version));
CREATE TABLE IF NOT EXISTS silence (
    id TEXT PRIMARY KEY, matchers TEXT NOT NULL, starts_ns INTEGER NOT NULL, ends_ns INTEGER NOT NULL,
    comment TEXT NOT NULL DEFAULT '', created_by TEXT NOT NULL DEFAULT '', created_ns INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    target TEXT NOT NULL, event_id TEXT NOT NULL, event_status TEXT NOT NULL,
    alert_key TEXT NOT NULL, model TEXT NOT NULL, version TEXT NOT NULL, rule TEXT NOT NULL,
    severity TEXT NOT NULL, body BLOB NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',          -- pending | delivered | failed
    attempts INTEGER NOT NULL DEFAULT 0, next_attempt_ns INTEGER NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT '', http_status INTEGER NOT NULL DEFAULT 0,
    created_ns INTEGER NOT NULL, updated_ns INTEGER NOT NULL, delivered_ns INTEGER NOT NULL DEFAULT 0,
    UNIQUE (target, event_id));
CREATE INDEX IF NOT EXISTS outbox_due ON outbox(target, status, id);
"""


class StoreError(StorageError):
    """The alert store cannot be opened or written; the message names the file."""


def default_path(state_dir: Path | str) -> Path:
    """``<state_dir>/alerts/alerts.sqlite3``."""
    return Path(state_dir) / "alerts" / "alerts.sqlite3"


@dataclass(frozen=True, slots=True)
class Silence:
    """Alerts whose labels match every matcher (value or glob) are not notified until ``ends_ns``."""

    id: str
    matchers: dict[str, str]
    starts_ns: int
    ends_ns: int
    comment: str = ""
    created_by: str = ""
    source: str = "cli"  # "cli" (store) or "config"

    def active(self, now_ns: int) -> bool:
        return self.starts_ns <= now_ns < self.ends_ns

    def matches(self, labels: Mapping[str, str]) -> bool:
        """All matchers match (a missing label never matches).

        >>> Silence("s", {"feature": "petal_*"}, 0, 10).matches({"feature": "petal_width"})
        True
        """
        return all(k in labels and fnmatch.fnmatchcase(labels[k], v) for k, v in self.matchers.items())


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One queued delivery of one announcement to one target (a webhook or the alerts topic)."""

    id: int
    target: str
    event_id: str
    event_status: str
    alert_key: str
    model: str
    version: str
    rule: str
    severity: str
    body: bytes
    status: str
    attempts: int
    next_attempt_ns: int
    last_error: str
    http_status: int
    created_ns: int
    updated_ns: int
    delivered_ns: int


_OUTBOX_COLS = ", ".join(OutboxRow.__dataclass_fields__)


class AlertStore:
    """Thread-safe access to the alert SQLite file (short transactions, WAL mode)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=10.0, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as e:
            raise StoreError(f"cannot open the alert store {self.path}: {e}") from None
        self._lock = threading.RLock()
        self._last_ns = 0

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> AlertStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _unique_ns(self) -> int:
        """Wall-clock ns, strictly increasing in this process (delivery points are keyed by it)."""
        self._last_ns = max(time.time_ns(), self._last_ns + 1)
        return self._last_ns

    # alert state ------------------------------------------------------------------
    def last_window(self, model: str, version: str) -> int:
        with self._lock:
            row = self._db.execute(
                "SELECT last_window_ns FROM window_mark WHERE model=? AND version=?", (model, version)
            ).fetchone()
        return int(row[0]) if row else 0

    def states(
        self, model: str | None = None, version: str | None = None, statuses: Sequence[str] | None = None
    ) -> dict[str, AlertState]:
        """Alert states by key, optionally of one model/version and some statuses."""
        sql, args = "SELECT data FROM alert_state WHERE 1=1", []
        if model is not None:
            sql += " AND model=?"
            args.append(model)
        if version is not None:
            sql += " AND version=?"
            args.append(version)
        if statuses:
            sql += f" AND status IN ({','.join('?' * len(statuses))})"
            args.extend(statuses)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY key", args).fetchall()
        out = {}
        for (data,) in rows:
            st = AlertState.from_dict(json.loads(data))
            out[st.key] = st
        return out

    def commit_window(
        self,
        model: str,
        version: str,
        window_end_ns: int,
        states: Iterable[AlertState],
        outbox: Iterable[dict[str, Any]],
    ) -> list[int]:
        """Atomically: save ``states`` (inactive ones are deleted), queue ``outbox`` rows, mark the window.

        Outbox rows are dicts with target, event_id, event_status, alert_key, model,
        version, rule, severity, body. Returns the ids of the rows actually queued (a
        row already queued for the same target and event id is ignored).
        """
        ids: list[int] = []
        with self._lock:
            now = self._unique_ns()
            try:
                self._db.execute("BEGIN IMMEDIATE")
                for st in states:
                    if st.status == "inactive":
                        self._db.execute("DELETE FROM alert_state WHERE key=?", (st.key,))
                    else:
                        self._db.execute(
                            "INSERT OR REPLACE INTO alert_state(key, model, version, rule, status, data, updated_ns)"
                            " VALUES (?,?,?,?,?,?,?)",
                            (st.key, st.model, st.version, st.rule, st.status, json.dumps(st.to_dict()), now),
                        )
                for row in outbox:
                    created = self._unique_ns()
                    cur = self._db.execute(
                        "INSERT OR IGNORE INTO outbox(target, event_id, event_status, alert_key, model, version,"
                        " rule, severity, body, created_ns, updated_ns) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                        (
                            row["target"],
                            row["event_id"],
                            row["event_status"],
                            row["alert_key"],
                            row["model"],
                            row["version"],
                            row["rule"],
                            row["severity"],
                            row["body"],
                            created,
                            created,
                        ),
                    )
                    if cur.rowcount and cur.lastrowid is not None:
                        ids.append(int(cur.lastrowid))
                self._db.execute(
                    "INSERT INTO window_mark(model, version, last_window_ns) VALUES (?,?,?)"
                    " ON CONFLICT(model, version) DO UPDATE SET last_window_ns=excluded.last_window_ns",
                    (model, version, window_end_ns),
                )
                self._db.execute("COMMIT")
            except sqlite3.Error as e:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise StoreError(f"cannot write the alert store {self.path}: {e}") from None
        return ids

    def replace_states(self, model: str, version: str, states: Iterable[AlertState]) -> None:
        """The local copy of a model version's alert states becomes ``states`` (their partition came to this
        worker: restored from Kafka; or left it: none)."""
        with self._lock:
            now = self._unique_ns()
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.execute("DELETE FROM alert_state WHERE model=? AND version=?", (model, version))
                for st in states:
                    self._db.execute(
                        "INSERT OR REPLACE INTO alert_state(key, model, version, rule, status, data, updated_ns)"
                        " VALUES (?,?,?,?,?,?,?)",
                        (st.key, st.model, st.version, st.rule, st.status, json.dumps(st.to_dict()), now),
                    )
                self._db.execute("COMMIT")
            except sqlite3.Error as e:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise StoreError(f"cannot write the alert store {self.path}: {e}") from None

    # silences -------------------------------------------------------------------------
    def add_silence(
        self,
        matchers: Mapping[str, str],
        ends_ns: int,
        *,
        starts_ns: int | None = None,
        comment: str = "",
        created_by: str = "",
    ) -> Silence:
        if not matchers:
            raise ValueError("a silence needs at least one matcher")
        now = time.time_ns()
        s = Silence(
            id=uuid.uuid4().hex[:12],
            matchers=dict(matchers),
            starts_ns=starts_ns or now,
            ends_ns=int(ends_ns),
            comment=comment,
            created_by=created_by,
        )
        if s.ends_ns <= s.starts_ns:
            raise ValueError("a silence must end after it starts")
        with self._lock:
            self._db.execute(
                "INSERT INTO silence(id, matchers, starts_ns, ends_ns, comment, created_by, created_ns)"
                " VALUES (?,?,?,?,?,?,?)",
                (s.id, json.dumps(s.matchers, sort_keys=True), s.starts_ns, s.ends_ns, comment, created_by, now),
            )
        return s

    def remove_silence(self, silence_id: str) -> bool:
        """Delete a silence (by id or unique id prefix); False if none matched."""
        with self._lock:
            rows = self._db.execute("SELECT id FROM silence WHERE id LIKE ?", (silence_id + "%",)).fetchall()
            if len(rows) != 1:
                return False
            self._db.execute("DELETE FROM silence WHERE id=?", (rows[0][0],))
        return True

    def silences(self, *, include_expired: bool = False, now_ns: int | None = None) -> list[Silence]:
        now = time.time_ns() if now_ns is None else now_ns
        with self._lock:
            rows = self._db.execute(
                "SELECT id, matchers, starts_ns, ends_ns, comment, created_by FROM silence ORDER BY ends_ns"
            ).fetchall()
        out = [Silence(r[0], json.loads(r[1]), r[2], r[3], r[4], r[5]) for r in rows]
        return out if include_expired else [s for s in out if s.ends_ns > now]

    # outbox -------------------------------------------------------------------------
    def _rows(self, sql: str, args: Sequence[Any]) -> list[OutboxRow]:
        with self._lock:
            rows = self._db.execute(f"SELECT {_OUTBOX_COLS} FROM outbox {sql}", args).fetchall()
        return [OutboxRow(*r) for r in rows]

    def head(self, target: str) -> OutboxRow | None:
        """The oldest pending delivery of ``target`` (deliveries to one target stay in order)."""
        rows = self._rows("WHERE target=? AND status='pending' ORDER BY id LIMIT 1", (target,))
        return rows[0] if rows else None

    def get(self, row_id: int) -> OutboxRow | None:
        rows = self._rows("WHERE id=?", (row_id,))
        return rows[0] if rows else None

    def record_attempt(
        self,
        row_id: int,
        *,
        status: str,
        attempts: int,
        next_attempt_ns: int = 0,
        last_error: str = "",
        http_status: int = 0,
    ) -> OutboxRow:
        """Save the outcome of one attempt (status pending = will retry) and return the row."""
        now = time.time_ns()
        with self._lock:
            self._db.execute(
                "UPDATE outbox SET status=?, attempts=?, next_attempt_ns=?, last_error=?, http_status=?,"
                " updated_ns=?, delivered_ns=? WHERE id=?",
                (
                    status,
                    attempts,
                    next_attempt_ns,
                    last_error[:500],
                    http_status,
                    now,
                    now if status == "delivered" else 0,
                    row_id,
                ),
            )
        row = self.get(row_id)
        assert row is not None
        return row

    def deliveries(self, *, target: str | None = None, status: str | None = None, limit: int = 50) -> list[OutboxRow]:
        """The delivery log, newest first."""
        sql, args = "WHERE 1=1", []
        if target:
            sql += " AND target=?"
            args.append(target)
        if status:
            sql += " AND status=?"
            args.append(status)
        return self._rows(sql + " ORDER BY id DESC LIMIT ?", [*args, limit])

    def pending_count(self, target: str | None = None) -> int:
        with self._lock:
            if target is None:
                row = self._db.execute("SELECT COUNT(*) FROM outbox WHERE status='pending'").fetchone()
            else:
                row = self._db.execute(
                    "SELECT COUNT(*) FROM outbox WHERE status='pending' AND target=?", (target,)
                ).fetchone()
        return int(row[0])

    def prune(self, older_than_ns: int) -> int:
        """Forget finished deliveries, resolved alerts and expired silences older than the cut-off."""
        with self._lock:
            n = self._db.execute(
                "DELETE FROM outbox WHERE status IN ('delivered','failed') AND updated_ns < ?", (older_than_ns,)
            ).rowcount
            n += self._db.execute(
                "DELETE FROM alert_state WHERE status='resolved' AND updated_ns < ?", (older_than_ns,)
            ).rowcount
            n += self._db.execute("DELETE FROM silence WHERE ends_ns < ?", (older_than_ns,)).rowcount
        return n
