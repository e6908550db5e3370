"""Create and drop driftwatch's InfluxDB database over the v1 HTTP API.

InfluxDB 1.x: ``POST /query`` with ``CREATE DATABASE`` / ``DROP DATABASE`` (both
idempotent). Credentials: ``influx_username``/``influx_password`` (HTTP basic) or
``influx_token`` (``Authorization: Token …``, how 2.x's v1 endpoints accept a token).

InfluxDB 2.x (``influx_version=2``) has no ``CREATE DATABASE``: the database is a
bucket (``influx_bucket`` or ``influx_db``) that 2.7+ maps to a v1 database
automatically; :func:`ensure_database` creates the bucket in ``influx_org`` with
influxdb-client's ``BucketsApi`` if it is missing (the compose file's InfluxDB creates
it at its first start anyway). The local stack runs 1.x; the 2.x requests are checked
against an emulation of the 2.x API in ``tests/streams/influx/test_influx_v2.py``.

:func:`query` runs one InfluxQL statement and returns the parsed JSON, for tests and
small tools.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import httpx

from detectors.errors import ServiceError
from streams.influx.client import InfluxQueryError, InfluxTarget, statement_results
from streams.influx.influxql import quote_ident
from streams.influx.sink import InfluxConfigError, v2_client, v2_error
from streams.settings import Settings


class InfluxAdminError(ServiceError):
    """InfluxDB refused or could not be reached; the message says which URL and why."""


def basic_auth(settings: Settings) -> tuple[str, str] | None:
    """HTTP basic credentials (1.x user/password) for an httpx client, or None (no user, or a token).

    >>> basic_auth(Settings(influx_username="u", influx_password="p")), basic_auth(Settings(influx_token="t"))
    (('u', 'p'), None)
    """
    return InfluxTarget.from_settings(settings).auth_options().get("auth")


def _request(settings: Settings, method: str, path: str, timeout: float = 10.0, **kw: Any) -> httpx.Response:
    options = InfluxTarget.from_settings(settings).auth_options()
    headers = {**options.get("headers", {}), **kw.pop("headers", {})}
    url = settings.influx_url.rstrip("/") + path
    try:
        resp = httpx.request(method, url, headers=headers, auth=options.get("auth"), timeout=timeout, **kw)
    except httpx.HTTPError as e:
        raise InfluxAdminError(
            f"cannot reach InfluxDB at {settings.influx_url} ({type(e).__name__}: {e}): is it running? "
            "(`driftwatch stack status`; set DRIFTWATCH_INFLUX_URL for another server)"
        ) from e
    if resp.status_code >= 300:
        raise InfluxAdminError(f"InfluxDB {method} {path} answered {resp.status_code}: {resp.text.strip()[:500]}")
    return resp


def query(settings: Settings, influxql: str, db: str | None = None, method: str = "POST") -> dict[str, Any]:
    """Run one InfluxQL statement via ``/query``; raise on any statement error.

    ``db`` defaults to the v1 database (``influx_db``; on 2.x the bucket). Returns the
    JSON answer (``{"results": [{"statement_id": 0, "series": [...]}]}``).
    """
    target = InfluxTarget.from_settings(settings)
    params = target.query_params(influxql, "ns", db)
    if method == "GET":
        resp = _request(settings, "GET", "/query", params=params)
    else:
        resp = _request(settings, "POST", "/query", data=params)
    try:
        statement_results(resp, target, [influxql], params["db"])
    except InfluxQueryError as e:
        raise InfluxAdminError(str(e)) from None
    return resp.json()


def ensure_database(settings: Settings, name: str | None = None) -> str:
    """Create the database (1.x) or bucket (2.x) if missing; return its name. Idempotent."""
    db = name or settings.influx_db
    if settings.influx_version == 2:
        return _ensure_bucket(settings, settings.influx_bucket or db)
    query(settings, f"CREATE DATABASE {quote_ident(db)}", db="")
    return db


def drop_database(settings: Settings, name: str | None = None) -> None:
    """Drop the database (1.x) or delete the bucket (2.x); missing is fine."""
    db = name or settings.influx_db
    if settings.influx_version == 2:
        _drop_bucket(settings, settings.influx_bucket or db)
        return
    query(settings, f"DROP DATABASE {quote_ident(db)}", db="")


def list_databases(settings: Settings) -> list[str]:
    """Names of the databases the server has (1.x: ``SHOW DATABASES``)."""
    body = query(settings, "SHOW DATABASES", db="", method="GET")
    series = body["results"][0].get("series") or []
    return [row[0] for s in series for row in s.get("values") or []]


# ----------------------------------------------------------------------- 2.x buckets


@contextlib.contextmanager
def _buckets_api(settings: Settings, what: str) -> Iterator[Any]:
    """influxdb-client's ``BucketsApi``, its errors turned into :class:`InfluxAdminError`."""
    import urllib3
    from influxdb_client.client.exceptions import InfluxDBError

    try:
        client = v2_client(settings)
    except InfluxConfigError as e:
        raise InfluxAdminError(str(e)) from None
    try:
        with client:
            yield client.buckets_api()
    except (InfluxDBError, urllib3.exceptions.HTTPError, OSError) as e:
        err = v2_error(e)
        if isinstance(err, tuple):
            raise InfluxAdminError(f"InfluxDB at {settings.influx_url}: {what} answered {err[0]}: {err[1]}") from None
        if type(e) is InfluxDBError:  # the client's own verdict, e.g. the organisation does not exist
            raise InfluxAdminError(f"InfluxDB at {settings.influx_url}: {what}: {e.message}") from None
        raise InfluxAdminError(
            f"cannot reach InfluxDB at {settings.influx_url} ({err}): is it running? "
            "(set DRIFTWATCH_INFLUX_URL for another server)"
        ) from None


def _find_bucket(api: Any, settings: Settings, bucket: str) -> Any | None:
    found = api.find_buckets(name=bucket, org=settings.influx_org).buckets or []
    return found[0] if found else None


def _ensure_bucket(settings: Settings, bucket: str) -> str:
    with _buckets_api(settings, f"ensure bucket {bucket!r}") as api:
        if _find_bucket(api, settings, bucket) is None:
            api.create_bucket(bucket_name=bucket, org=settings.influx_org)  # retention: infinite (docs/influxdb.md)
    return bucket


def _drop_bucket(settings: Settings, bucket: str) -> None:
    with _buckets_api(settings, f"delete bucket {bucket!r}") as api:
        found = _find_bucket(api, settings, bucket)
        if found is not None:
            api.delete_bucket(found)
