"""One InfluxDB client: where it is, how to authenticate, and what its answers mean.

Every request driftwatch makes to InfluxDB — the worker's sink and checkpoint reads, the
database admin, the tools and tests, the dashboard — goes to the v1 HTTP API (1.x natively,
2.x and 3.x through their v1 compatibility endpoints: database = bucket, ``Authorization:
Token``) and is described by one :class:`InfluxTarget` (URL, database, credentials; hashable,
so the dashboard's caches key on it). :func:`statement_results` reads a ``/query`` answer the
same way for everyone: per statement its series, or :class:`DatabaseNotFound` /
:class:`InfluxQueryError` naming the statement; :func:`query` and :func:`aquery` turn it into
rows. Line protocol is built by :mod:`streams.influx.sink`; InfluxQL text is quoted by
:mod:`streams.influx.influxql`.

>>> InfluxTarget("http://u:p@influx:8086", "db").safe_url
'http://influx:8086'
>>> InfluxTarget("http://x", "db", username="u", password="p").auth_options()
{'auth': ('u', 'p')}
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from detectors.errors import ServiceError

__all__ = [
    "DatabaseNotFound",
    "InfluxQueryError",
    "InfluxTarget",
    "InfluxUnavailable",
    "aquery",
    "query",
    "rows",
    "statement_results",
]


class InfluxQueryError(ServiceError):
    """InfluxDB refused a statement or a write, or answered something that is not an answer."""


class DatabaseNotFound(InfluxQueryError):
    """The database (bucket) does not exist yet: nothing has been written to it."""


class InfluxUnavailable(InfluxQueryError):
    """InfluxDB cannot be reached at all."""


@dataclass(frozen=True)
class InfluxTarget:
    """Where and how to reach InfluxDB's v1 API (hashable: it is part of cache keys)."""

    url: str
    db: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    timeout: float = 15.0

    @classmethod
    def from_settings(cls, s: Any, timeout: float = 15.0) -> InfluxTarget:
        """From :class:`streams.settings.Settings`: 1.x user/password, or a 2.x token + bucket."""

        def secret(v: Any) -> str | None:
            return v.get_secret_value() if v is not None else None

        db = s.influx_db
        if getattr(s, "influx_version", 1) == 2 and getattr(s, "influx_bucket", None):
            db = s.influx_bucket
        return cls(
            url=s.influx_url.rstrip("/"),
            db=db,
            username=s.influx_username,
            password=secret(s.influx_password),
            token=secret(s.influx_token),
            timeout=timeout,
        )

    def auth_options(self) -> dict[str, Any]:
        """``headers``/``auth`` for httpx: a 2.x token, or 1.x user and password as HTTP basic (never logged).

        InfluxDB reads user and password from HTTP basic auth or the URL query, never from a POST form.
        """
        if self.token:
            return {"headers": {"Authorization": f"Token {self.token}"}}
        if self.username:
            return {"auth": (self.username, self.password or "")}
        return {}

    @property
    def safe_url(self) -> str:
        """The URL without ``user:password@`` (for messages and logs)."""
        scheme, sep, rest = self.url.partition("://")
        host, slash, path = rest.partition("/")
        return f"{scheme}{sep}{host.rpartition('@')[2]}{slash}{path}"

    def query_params(self, statements: str | Sequence[str], epoch: str = "ns", db: str | None = None) -> dict[str, str]:
        """The ``/query`` parameters of ``statements`` (joined with ``;``, run in one request)."""
        text = statements if isinstance(statements, str) else ";\n".join(statements)
        return {"q": text, "db": self.db if db is None else db, "epoch": epoch}


def statement_results(
    resp: httpx.Response, target: InfluxTarget, statements: Sequence[str], db: str | None = None
) -> list[list[dict]]:
    """Per statement its series (``[{"name", "columns", "values", "tags"}, ...]``); raise on any error.

    ``db``: the database the statements ran on (default the target's), for the messages.

    :class:`DatabaseNotFound` when the database does not exist, :class:`InfluxQueryError` for a
    refused credential, a statement InfluxDB rejected, or an answer that is not JSON.
    """
    first = statements[0] if statements else ""
    db = target.db if db is None else db
    if resp.status_code in (401, 403):
        raise InfluxQueryError(f"InfluxDB at {target.safe_url} refused the credentials ({resp.status_code})")
    try:
        body = resp.json()
    except ValueError:
        raise InfluxQueryError(
            f"InfluxDB at {target.safe_url} answered {resp.status_code}: {resp.text[:300]}"
        ) from None
    if not isinstance(body, dict):
        raise InfluxQueryError(f"InfluxDB at {target.safe_url} answered {resp.status_code}: {resp.text[:300]}")
    if "error" in body:
        _raise(str(body["error"]), target, first, db)
    if resp.status_code >= 300:
        _raise(resp.text[:300], target, first, db)
    results = body.get("results", [])
    out: list[list[dict]] = []
    for i, statement in enumerate(statements):
        res: dict[str, Any] = next((r for r in results if r.get("statement_id", 0) == i), {})
        if "error" in res:
            _raise(str(res["error"]), target, statement, db)
        out.append(res.get("series") or [])
    return out


def _raise(message: str, target: InfluxTarget, statement: str, db: str) -> None:
    if "database not found" in message:
        raise DatabaseNotFound(
            f"InfluxDB rejected {statement[:200]!r}: database {db!r} does not exist on {target.safe_url} yet"
        )
    raise InfluxQueryError(f"InfluxDB rejected {statement[:200]!r}: {message}")


def rows(series: list[dict]) -> list[dict[str, Any]]:
    """One dict per row: the columns (``time`` as asked by ``epoch``), the series' tags, ``measurement``."""
    out: list[dict[str, Any]] = []
    for s in series:
        cols = s.get("columns") or []
        tags = s.get("tags") or {}
        name = s.get("name")
        for values in s.get("values") or []:
            row = dict(zip(cols, values, strict=False))
            row.update(tags)
            if name is not None:
                row.setdefault("measurement", name)
            out.append(row)
    return out


def query(
    target: InfluxTarget, influxql: str, db: str | None = None, timeout: float | None = None, epoch: str = "ns"
) -> list[dict[str, Any]]:
    """Run one InfluxQL statement and return one dict per row (``time`` in epoch ``epoch``)."""
    try:
        resp = httpx.get(
            target.url.rstrip("/") + "/query",
            params=target.query_params(influxql, epoch, db),
            timeout=target.timeout if timeout is None else timeout,
            **target.auth_options(),
        )
    except httpx.HTTPError as e:
        raise InfluxUnavailable(f"cannot reach InfluxDB at {target.safe_url}: {type(e).__name__}: {e}") from e
    return rows(statement_results(resp, target, [influxql], db)[0])


async def aquery(
    client: httpx.AsyncClient, target: InfluxTarget, influxql: str, db: str | None = None, epoch: str = "ns"
) -> list[dict[str, Any]]:
    """:func:`query` on an existing async client (the worker's, which carries the credentials)."""
    try:
        resp = await client.get("/query", params=target.query_params(influxql, epoch, db))
    except httpx.HTTPError as e:
        raise InfluxUnavailable(f"cannot reach InfluxDB at {target.safe_url}: {type(e).__name__}: {e}") from e
    return rows(statement_results(resp, target, [influxql], db)[0])
