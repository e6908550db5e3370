# size: every InfluxQL statement the dashboard runs, one per page section, kept together so names stay in step
"""Every InfluxQL statement the dashboard runs, through driftwatch's one InfluxDB client.

All queries go over InfluxDB's v1 HTTP API (``GET /query``), which InfluxDB 1.x
serves natively, 2.x through its v1 compatibility API (database = bucket name,
``Authorization: Token``) and 3.x as well; InfluxQL is the one language all three
answer. Aggregation happens in InfluxDB (``GROUP BY time``, ``MEAN``, ``MIN``,
``COUNT``, ``ORDER BY time DESC LIMIT 1`` for the latest point of a series), so the
dashboard moves hundreds of rows, not the raw points.

Measurement, tag and field names come from :mod:`detectors.records` (the names the
worker writes; the ``F_*`` field names are re-exported here for the views); the
connection (:class:`Conn` = :class:`streams.influx.client.InfluxTarget`), its errors and
the reading of answers come from :mod:`streams.influx.client`, quoting from
:mod:`streams.influx.influxql`. This module is independent of Streamlit (the benchmark and the
tests call it directly); :mod:`dashboard.data` adds the short cache.

>>> lit("it's")
"'it\\\\'s'"
>>> TimeRange.last("7d").clause()
'time > now() - 604800s'
>>> pick_bucket(7 * 86400), pick_bucket(7 * 86400, MAX_HEAT_BUCKETS)
('2h', '3h')
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
import warnings
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pandas as pd

from detectors import records as R
from detectors.records import (  # noqa: F401 - the field names, re-exported for the views (Q.F_*)
    CBPE,
    CKPT_FIELDS,
    DELIVERED,
    DRIFT_TESTS,
    EFFECT_FIELDS,
    F_ATTEMPTS,
    F_BAND_LOWER,
    F_BAND_UPPER,
    F_CBPE_VALUE,
    F_CLOSE_REASON,
    F_CLOSED_AT,
    F_COMPUTED,
    F_CONSUMER_LAG,
    F_CORRECTION,
    F_COUNT,
    F_DELAY_P50,
    F_DELAY_P95,
    F_DELIVERY_STATUS,
    F_DL_MODEL,
    F_DRIFT,
    F_DRIFT_EVALUATED,
    F_DURATION,
    F_EFFECT,
    F_ENGINE,
    F_ESTIMATED,
    F_ESTIMATION_ERROR,
    F_EVENT,
    F_EVENTS_PER_S,
    F_EXPIRED,
    F_EXTRACTION_FLAG,
    F_FIRING,
    F_FLAGGED,
    F_FLAGGED_BY,
    F_HTTP_STATUS,
    F_IMPORTANCE,
    F_JS,
    F_JUDGED,
    F_LABEL_COVERAGE,
    F_LAST_ERROR,
    F_LOWER,
    F_MATCHED,
    F_MESSAGE,
    F_N_CUR,
    F_N_DRIFTED,
    F_N_EVENTS,
    F_N_FEATURES,
    F_N_INVALID,
    F_N_LABELS,
    F_N_REF,
    F_N_WINDOW,
    F_NORMALIZED,
    F_P_VAL,
    F_P_VALUE,
    F_PENDING,
    F_PREDICTIONS,
    F_PSI,
    F_RANK,
    F_REASON,
    F_REFERENCE,
    F_RULE,
    F_SCORE,
    F_SEQ,
    F_SHARE_DRIFTED,
    F_SILENCED,
    F_SOURCE_FLAG,
    F_STATE,
    F_STATISTIC,
    F_THRESHOLD,
    F_TOP_FEATURE,
    F_UPPER,
    F_VALUE,
    F_WASSERSTEIN,
    F_WINDOW_START,
    LABEL_JOIN,
    PRED_ALL,
    QUALITY_RATES,
    REALIZED,
    STATE_FIRING,
    STATE_PENDING,
    STATE_RESOLVED,
    SUMMARY_DETECTOR,
    T_ENDPOINT,
    TIME,
)
from streams.influx.client import (
    DatabaseNotFound,
    InfluxQueryError,
    InfluxTarget,
    InfluxUnavailable,
    statement_results,
)
from streams.influx.influxql import quote_ident as ident  # short: every query uses them
from streams.influx.influxql import quote_literal as lit

log = logging.getLogger(__name__)


# Time ranges --------------------------------------------------------------------
PRESETS: dict[str, int] = {
    "15m": 15 * 60,
    "1h": 3600,
    "6h": 6 * 3600,
    "24h": 86400,
    "7d": 7 * 86400,
    "30d": 30 * 86400,
}
#: GROUP BY time() intervals the dashboard uses, in seconds, smallest first
BUCKETS: tuple[tuple[str, int], ...] = (
    ("10s", 10),
    ("30s", 30),
    ("1m", 60),
    ("2m", 120),
    ("5m", 300),
    ("10m", 600),
    ("15m", 900),
    ("30m", 1800),
    ("1h", 3600),
    ("2h", 7200),
    ("3h", 10800),
    ("6h", 21600),
    ("12h", 43200),
    ("1d", 86400),
)
#: at most this many time buckets per line chart, and per heatmap row. The browser pays
#: for every mark (Vega draws and evaluates tooltips per point and cell): a line chart gets
#: ≤ 100 points per series (2 h for 7 days: 840 points for 10 models), a heatmap draws
#: features × buckets cells, so it shows the top features only (``HEATMAP_TOP``) at ≤ 60
#: columns (3 h for 7 days) — 20 × 56 cells instead of 50 × 84.
MAX_BUCKETS = 100
#: the shortest range the default ("since the data started") shows
MIN_AUTO_SECONDS = 15 * 60
MAX_HEAT_BUCKETS = 60
#: rows of a feature × time heatmap drawn at once; the rest on demand
HEATMAP_TOP = 20


# one InfluxDB client (streams.influx.client): its target and errors under the dashboard's names
Conn = InfluxTarget
InfluxError = InfluxQueryError
NoDatabase = DatabaseNotFound


def pick_bucket(seconds: float, max_buckets: int = MAX_BUCKETS) -> str:
    """The smallest ``GROUP BY time()`` interval that keeps a range under ``max_buckets``.

    >>> pick_bucket(3600)
    '1m'
    """
    for name, size in BUCKETS:
        if seconds / size <= max_buckets:
            return name
    return BUCKETS[-1][0]


def bucket_seconds(bucket: str) -> int:
    """Seconds of a bucket name.

    >>> bucket_seconds('2h')
    7200
    """
    return dict(BUCKETS)[bucket]


@dataclass(frozen=True)
class TimeRange:
    """A query's time range: the last N seconds (relative to InfluxDB's ``now()``) or absolute."""

    seconds: int
    end_ns: int | None = None  # None: up to now

    @classmethod
    def last(cls, preset: str) -> TimeRange:
        if preset not in PRESETS:
            raise ValueError(f"unknown time range {preset!r}; one of {', '.join(PRESETS)}")
        return cls(PRESETS[preset])

    @classmethod
    def between(cls, start: datetime, end: datetime) -> TimeRange:
        if end <= start:
            raise ValueError("the end of the time range must be after its start")
        return cls(max(1, int((end - start).total_seconds())), int(end.timestamp() * 1e9))

    def clause(self) -> str:
        if self.end_ns is None:
            return f"time > now() - {self.seconds}s"
        start = self.end_ns - self.seconds * 1_000_000_000
        return f"time > {start} AND time <= {self.end_ns}"

    @classmethod
    def since(cls, start: datetime, now: datetime | None = None, min_seconds: int = MIN_AUTO_SECONDS) -> TimeRange:
        """From shortly before ``start`` up to now: the data's own span plus a margin of a
        tenth (at least ``min_seconds``, at most the longest preset), so every series fills
        the chart instead of being one dot in a day.

        >>> from datetime import timedelta
        >>> t0 = datetime(2026, 1, 1, 9, 18, tzinfo=UTC)
        >>> TimeRange.since(t0, now=t0 + timedelta(minutes=12)).seconds
        900
        >>> TimeRange.since(t0, now=t0 + timedelta(hours=2)).seconds
        8400
        """
        now = now or datetime.now(UTC)
        span = max(0.0, (now - start).total_seconds())
        seconds = max(min_seconds, int(math.ceil(span * 11 / 10)))
        # whole minutes (whole 10 minutes past an hour, hours past a day): the range is part
        # of every query's cache key, so it must not change with every second
        step = 60 if seconds <= 3600 else 600 if seconds <= 86400 else 3600
        seconds = int(math.ceil(seconds / step)) * step
        return cls(min(seconds, max(PRESETS.values())))

    def start(self, now: datetime | None = None) -> pd.Timestamp:
        """The range's start as a UTC timestamp (relative ranges: from ``now``)."""
        if self.end_ns is not None:
            return pd.Timestamp(self.end_ns - self.seconds * 1_000_000_000, unit="ns", tz="UTC")
        return pd.Timestamp(now or datetime.now(UTC)) - pd.Timedelta(seconds=self.seconds)

    @property
    def bucket(self) -> str:
        """``GROUP BY time()`` interval of line charts (≤ 100 points per series)."""
        return pick_bucket(self.seconds)

    @property
    def heat_bucket(self) -> str:
        """``GROUP BY time()`` interval of feature × time heatmaps (≤ 60 columns)."""
        return pick_bucket(self.seconds, MAX_HEAT_BUCKETS)


@dataclass(frozen=True)
class Scope:
    """What a page looks at: one model (or all), a version, a segment, a time range.

    ``version=None`` means every version; ``segment=None`` means the whole
    population (points without a segment tag).
    """

    rng: TimeRange
    model: str | None = None
    version: str | None = None
    segment: str | None = None

    def where(self, *extra: str, segment: bool = True, time_: bool = True) -> str:
        parts = [self.rng.clause()] if time_ else []
        if self.model is not None:
            parts.append(f"{ident(R.T_MODEL)} = {lit(self.model)}")
        if self.version is not None:
            parts.append(f"{ident(R.T_VERSION)} = {lit(self.version)}")
        if segment:
            parts.append(f"{ident(R.T_SEGMENT)} = {lit(self.segment or '')}")
        parts.extend(e for e in extra if e)
        return " WHERE " + " AND ".join(parts) if parts else ""


# Client --------------------------------------------------------------------------


_clients: dict[tuple[str, float], httpx.Client] = {}
_clients_lock = threading.Lock()


def _client(conn: Conn) -> httpx.Client:
    key = (conn.url, conn.timeout)
    with _clients_lock:
        c = _clients.get(key)
        if c is None:
            c = httpx.Client(base_url=conn.url, timeout=conn.timeout)
            _clients[key] = c
        return c


_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="dw-influx")


def run(conn: Conn, statements: str | Sequence[str]) -> list[list[dict[str, Any]]]:
    """Run InfluxQL statements, each in its own request, concurrently; per statement its series.

    InfluxDB runs the statements of one request one after the other; separate
    requests run on its cores side by side, so a page's queries cost about the
    slowest of them rather than their sum.
    """
    stmts = [statements] if isinstance(statements, str) else list(statements)
    if len(stmts) <= 1:
        return _run_one(conn, stmts)
    futures = [_pool.submit(_run_one, conn, [st]) for st in stmts]
    return [f.result()[0] for f in futures]


def _run_one(conn: Conn, statements: str | Sequence[str]) -> list[list[dict[str, Any]]]:
    """Run one or more InfluxQL statements in one request; per statement its series.

    Raises :class:`InfluxUnavailable` when the server cannot be reached,
    :class:`NoDatabase` when the database does not exist, :class:`InfluxError` for
    any other error (the message carries the server's words and the statement).
    """
    stmts = [statements] if isinstance(statements, str) else list(statements)
    if not stmts:
        return []
    params = conn.query_params(stmts, epoch="ms")
    t0 = time.perf_counter()
    try:
        # a POST form: InfluxDB reads credentials from HTTP basic auth (auth_options), never from the form
        resp = _client(conn).post("/query", data=params, **conn.auth_options())
    except httpx.TransportError as e:
        raise InfluxUnavailable(f"InfluxDB at {conn.safe_url} cannot be reached: {e}") from None
    if log.isEnabledFor(logging.DEBUG):
        log.debug(
            "InfluxDB %s db=%s answered %d in %.0f ms (%d bytes): %s",
            conn.safe_url,
            conn.db,
            resp.status_code,
            (time.perf_counter() - t0) * 1000,
            len(resp.content),
            ";  ".join(stmts)[:600],
        )
    return statement_results(resp, conn, stmts)


def ping(conn: Conn) -> bool:
    """True when InfluxDB answers ``/ping``."""
    try:
        return _client(conn).get("/ping").status_code in (200, 204)
    except httpx.TransportError:
        return False


def frame(series: list[dict[str, Any]], *, strip_prefix: str | None = None) -> pd.DataFrame:
    """One DataFrame from a statement's series: columns + one column per tag, ``time`` as UTC.

    ``strip_prefix`` turns ``mean_p_value`` into ``p_value`` (``SELECT mean(*)``).
    """
    if not series:
        return pd.DataFrame()
    columns = series[0]["columns"]
    tag_keys = list(dict.fromkeys(k for s in series for k in (s.get("tags") or {})))
    if all(s["columns"] == columns for s in series) and not set(tag_keys) & set(columns):
        # the usual case (one statement's series share their columns): one DataFrame from
        # plain rows — ~20x faster than a DataFrame per series and a concat (50 series:
        # ~5 ms instead of ~100 ms on every "latest per feature" query)
        rows: list[list[Any]] = []
        for s in series:
            tags = s.get("tags") or {}
            tv = [tags.get(k) for k in tag_keys]
            rows.extend([*v, *tv] for v in s.get("values", []))
        df = pd.DataFrame(rows, columns=[*columns, *tag_keys])
    else:
        parts = []
        for s in series:
            part = pd.DataFrame(s.get("values", []), columns=s["columns"])
            for k, v in (s.get("tags") or {}).items():
                part[k] = v
            parts.append(part)
        with warnings.catch_warnings():  # all-NA columns of some series: keep today's dtype rules
            warnings.simplefilter("ignore", FutureWarning)
            df = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    if TIME in df:
        df[TIME] = pd.to_datetime(df[TIME], unit="ms", utc=True)
    if strip_prefix:
        df.columns = [c[len(strip_prefix) :] if c.startswith(strip_prefix) else c for c in df.columns]
    return df


def query_df(conn: Conn, statement: str, **kw: Any) -> pd.DataFrame:
    """Run one statement, return its DataFrame."""
    return frame(run(conn, statement)[0], **kw)


def col(df: pd.DataFrame, name: str, default: Any = float("nan")) -> pd.Series:
    """A column, or a column of ``default`` when the worker did not write that field."""
    if name in df:
        return df[name]
    return pd.Series([default] * len(df), index=df.index, dtype=object if isinstance(default, str) else None)


# Metadata --------------------------------------------------------------------------


def tag_values(conn: Conn, key: str, *, measurement: str | None = None, model: str | None = None) -> list[str]:
    """Distinct values of a tag (optionally of one measurement / one model), sorted."""
    q = "SHOW TAG VALUES"
    if measurement:
        q += f" FROM {ident(measurement)}"
    q += f" WITH KEY = {ident(key)}"
    if model is not None:
        q += f" WHERE {ident(R.T_MODEL)} = {lit(model)}"
    vals = {row[1] for s in run(conn, q)[0] for row in s.get("values", [])}
    return sorted(v for v in vals if v != "")


def data_start(conn: Conn, models: Iterable[str] = ()) -> pd.Timestamp | None:
    """When the first window of ``models`` (default: any) within the longest preset closed,
    or None without any. One point per series, read in time order: cheap at any volume."""
    where = f" WHERE time > now() - {max(PRESETS.values())}s"
    ms = list(models)
    if ms:
        where += " AND " + tag_in(R.T_MODEL, ms)
    df = query_df(conn, f"SELECT {ident(F_N_EVENTS)} FROM {ident(R.WINDOW)}{where} ORDER BY time ASC LIMIT 1")
    if not len(df) or TIME not in df:
        return None
    return pd.Timestamp(df[TIME].min())


def models(conn: Conn) -> list[str]:
    """Every model that has written anything."""
    return tag_values(conn, R.T_MODEL)


def versions(conn: Conn, model: str) -> list[str]:
    return tag_values(conn, R.T_VERSION, model=model)


def segments(conn: Conn, model: str) -> list[str]:
    """Segments with drift results (``dw_prediction`` uses the segment tag for class shares)."""
    return tag_values(conn, R.T_SEGMENT, measurement=R.DRIFT, model=model)


def features(conn: Conn, model: str) -> list[str]:
    return tag_values(conn, R.T_FEATURE, measurement=R.DRIFT, model=model)


# Overview ----------------------------------------------------------------------------


def overview(conn: Conn, rng: TimeRange, model_list: Iterable[str] | None = None) -> pd.DataFrame:
    """One row per model: its latest window, totals over the range, latest drift summary
    and adversarial score, and how many alerts are firing now (health via :func:`health`)."""
    all_ = Scope(rng)
    stmts = [
        # the latest window of each model and version
        f"SELECT * FROM {ident(R.WINDOW)}{all_.where()} GROUP BY {ident(R.T_MODEL)}, {ident(R.T_VERSION)}"
        " ORDER BY time DESC LIMIT 1",
        f"SELECT sum({ident(F_N_EVENTS)}) AS n_events_total, sum({ident(F_N_INVALID)}) AS n_invalid_total,"
        f" mean({ident(F_EVENTS_PER_S)}) AS events_per_s_mean, count({ident(F_N_EVENTS)}) AS n_windows"
        f" FROM {ident(R.WINDOW)}{all_.where()} GROUP BY {ident(R.T_MODEL)}",
        f"SELECT * FROM {ident(R.DRIFT_SUMMARY)}{all_.where(_summary_only())} GROUP BY {ident(R.T_MODEL)}"
        " ORDER BY time DESC LIMIT 1",
        f"SELECT {ident(F_SCORE)} FROM {ident(R.ADVERSARIAL)}{all_.where()} GROUP BY {ident(R.T_MODEL)}"
        " ORDER BY time DESC LIMIT 1",
        ALERT_LATEST,
    ]
    latest_w, totals, summary, adv, alert_last = (frame(s) for s in run(conn, stmts))
    alerts = _firing(alert_last)
    names = set(model_list) if model_list is not None else None
    models_seen: set[str] = set()
    for df in (latest_w, totals, summary, adv):
        if R.T_MODEL in df:
            models_seen.update(df[R.T_MODEL].dropna())
    if names is not None:
        models_seen &= names
    # each frame split by model once (a boolean filter per model and frame cost ~40 ms for 10 models)
    by_model = {
        name: _split(df) for name, df in (("w", latest_w), ("t", totals), ("d", summary), ("a", adv), ("al", alerts))
    }
    rows = []
    for m in sorted(models_seen):
        row: dict[str, Any] = {"model": m}
        w = by_model["w"].get(m, latest_w.iloc[0:0])
        if len(w):
            w = w.sort_values(TIME)
            last = w.iloc[-1]
            row["versions"] = ", ".join(sorted(w[R.T_VERSION].dropna().astype(str))) if R.T_VERSION in w else ""
            row["last_window"] = last[TIME]
            row["events_per_s"] = _num(last.get(F_EVENTS_PER_S))
            row["window_events"] = _num(last.get(F_N_EVENTS))
            row["window_seconds"] = _num(last.get(F_DURATION))
            row["consumer_lag"] = _num(last.get(F_CONSUMER_LAG))
            closed = _num(last.get(F_CLOSED_AT))
            # event-time lag: how long after its newest event the worker closed the window
            row["lag_s"] = closed - pd.Timestamp(last[TIME]).timestamp() if closed == closed else float("nan")
        t = by_model["t"].get(m, totals.iloc[0:0])
        if len(t):
            n = _num(t.iloc[0].get("n_events_total"))
            bad = _num(t.iloc[0].get("n_invalid_total"))
            row["events_total"] = n
            row["windows"] = _num(t.iloc[0].get("n_windows"))
            row["events_per_s_mean"] = _num(t.iloc[0].get("events_per_s_mean"))
            row["invalid_rate"] = bad / n if n and not math.isnan(n) and not math.isnan(bad) else float("nan")
        d = by_model["d"].get(m, summary.iloc[0:0])
        if len(d):
            last = d.iloc[-1]
            row["drift"] = bool(last.get(F_DRIFT)) if last.get(F_DRIFT) is not None else None
            row["share_drifted"] = _num(last.get(F_SHARE_DRIFTED))
            row["n_drifted"] = _num(last.get(F_N_DRIFTED))
            row["n_features"] = _num(last.get(F_N_FEATURES))
        a = by_model["a"].get(m, adv.iloc[0:0])
        if len(a):
            row["adversarial_score"] = _num(a.iloc[-1].get(F_SCORE))
        al = by_model["al"].get(m, alerts.iloc[0:0])
        row["active_alerts"] = int(len(al))
        sev = col(al, R.T_SEVERITY, "").astype(str).str.lower()
        row["critical_alerts"] = int((sev == "critical").sum())
        rows.append(row)
    out = pd.DataFrame(rows)
    if len(out):
        status = [health(r) for r in out.to_dict("records")]
        out.insert(1, "status", [s for s, _ in status])
        out.insert(2, "why", [w for _, w in status])
    return out


def _split(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """``df``'s rows by model (empty when it has no model column)."""
    if not len(df) or R.T_MODEL not in df:
        return {}
    return {str(k): g for k, g in df.groupby(R.T_MODEL, sort=False)}


def _num(v: Any) -> float:
    try:
        return float(v) if v is not None else float("nan")
    except (TypeError, ValueError):
        return float("nan")


#: invalid events above this share of a range make a model "degraded"
INVALID_RATE_WARN = 0.05
#: a model whose last window is older than this many window lengths is "stale"
STALE_WINDOWS = 3.0
STALE_MIN_S = 900.0


def health(row: dict[str, Any], now: datetime | None = None) -> tuple[str, str]:
    """A model's status and the reasons, from an :func:`overview` row.

    ``critical`` (a critical alert is firing), ``alerting`` (any alert firing),
    ``drifting`` (the latest drift summary says drift), ``degraded`` (more than 5 %
    invalid events), ``stale`` (no window for 3 window lengths, at least 15 min),
    ``no data`` (nothing in the range), else ``ok``.

    >>> health({"active_alerts": 0, "drift": False, "invalid_rate": 0.0})[0]
    'no data'

    A model without a drift summary (drift off, or none written yet) has ``drift`` NaN in the
    overview's frame, which is not drift:

    >>> health({"drift": float("nan"), "last_window": datetime.now(UTC)})[0]
    'ok'
    """
    now = now or datetime.now(UTC)
    reasons: list[str] = []
    status = "ok"
    crit, active = row.get("critical_alerts", 0) or 0, row.get("active_alerts", 0) or 0
    if crit:
        status = "critical"
        reasons.append(f"{crit} critical alert(s) firing")
    elif active:
        status = "alerting"
        reasons.append(f"{active} alert(s) firing")
    drift = row.get("drift")
    if drift is not None and drift == drift and bool(drift):  # NaN: no summary, not drift
        if status == "ok":
            status = "drifting"
        nd, nf = row.get("n_drifted"), row.get("n_features")
        reasons.append(f"{_fmt_int(nd)}/{_fmt_int(nf)} features drifting" if nf == nf and nf else "drift")
    inv = row.get("invalid_rate")
    if inv is not None and inv == inv and inv > INVALID_RATE_WARN:
        if status == "ok":
            status = "degraded"
        reasons.append(f"{inv:.1%} invalid events")
    last = row.get("last_window")
    if last is None or (isinstance(last, float) and math.isnan(last)) or pd.isna(last):
        return ("no data", "no window in this time range") if status == "ok" else (status, "; ".join(reasons))
    age = (now - pd.Timestamp(last).to_pydatetime()).total_seconds()
    dur = row.get("window_seconds")
    limit = max(STALE_MIN_S, STALE_WINDOWS * dur) if dur and dur == dur else STALE_MIN_S
    if age > limit:
        if status == "ok":
            status = "stale"
        reasons.append(f"last window {_ago(age)} ago")
    return status, "; ".join(reasons) or "all checks pass"


def _fmt_int(v: Any) -> str:
    try:
        return str(int(v))
    except (TypeError, ValueError):
        return "?"


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def throughput(conn: Conn, scope: Scope) -> pd.DataFrame:
    """Events per second and invalid share per model over time (bucketed means / sums)."""
    q = (
        f"SELECT mean({ident(F_EVENTS_PER_S)}) AS events_per_s, sum({ident(F_N_EVENTS)}) AS n_events,"
        f" sum({ident(F_N_INVALID)}) AS n_invalid FROM {ident(R.WINDOW)}{scope.where()}"
        f" GROUP BY time({scope.rng.bucket}), {ident(R.T_MODEL)} fill(none)"
    )
    df = query_df(conn, q)
    if len(df):
        n = pd.to_numeric(col(df, "n_events"), errors="coerce")
        df["invalid_rate"] = pd.to_numeric(col(df, "n_invalid"), errors="coerce") / n.where(n > 0)
    return df


# Alerts ---------------------------------------------------------------------------------


#: the latest point of every alert series (all time: an alert may fire for weeks)
ALERT_LATEST = f"SELECT * FROM {ident(R.ALERT)} GROUP BY * ORDER BY time DESC LIMIT 1"


def alert_latest(conn: Conn) -> pd.DataFrame:
    """The latest point of every alert series."""
    return query_df(conn, ALERT_LATEST)


def active_alerts(conn: Conn) -> pd.DataFrame:
    """Alerts whose latest state is firing."""
    return _firing(alert_latest(conn))


def _firing(df: pd.DataFrame) -> pd.DataFrame:
    if not len(df) or F_STATE not in df:
        return df.iloc[0:0]
    return df[df[F_STATE].astype(str).str.lower() == STATE_FIRING].reset_index(drop=True)


def alert_points(conn: Conn, scope: Scope, limit: int = 10_000) -> pd.DataFrame:
    """Every ``dw_alert`` point in the range, one row per alert series and window (oldest first)."""
    q = f"SELECT * FROM {ident(R.ALERT)}{scope.where(segment=False)} GROUP BY * ORDER BY time DESC LIMIT {limit}"
    df = query_df(conn, q)
    return df.sort_values(TIME).reset_index(drop=True) if len(df) else df


#: columns that are fields of dw_alert, not tags identifying an alert series
_ALERT_FIELDS = {
    TIME,
    F_STATE,
    F_FIRING,
    F_MESSAGE,
    F_SILENCED,
    F_VALUE,
    F_THRESHOLD,
    "value_str",
    "threshold_str",
    "consecutive",
    "key",
    "notified",
}


def alert_key_columns(df: pd.DataFrame) -> list[str]:
    """The columns that identify one alert series (its tags)."""
    if "key" in df:
        return ["key"]
    return [c for c in df.columns if c not in _ALERT_FIELDS]


def alert_changes(points: pd.DataFrame) -> pd.DataFrame:
    """Only the points where an alert's status changed (its first point counts as a change)."""
    if not len(points) or F_STATE not in points:
        return points.iloc[0:0]
    keys = alert_key_columns(points)
    df = points.sort_values(TIME)
    prev = df.groupby(keys, dropna=False)[F_STATE].shift()
    return df[prev.ne(df[F_STATE])].sort_values(TIME, ascending=False).reset_index(drop=True)


def alert_intervals(points: pd.DataFrame, now: pd.Timestamp | None = None) -> pd.DataFrame:
    """Pending and firing periods per alert: ``start``, ``end``, ``status``, ``ongoing`` + its tags.

    A period starts at the first window with that status and ends at the first
    window with another status (``resolved``); a period still open ends ``now``.

    >>> t = pd.to_datetime([0, 60, 120, 180], unit="s", utc=True)
    >>> p = pd.DataFrame({"time": t, "rule": "r", "status": ["pending", "firing", "firing", "resolved"]})
    >>> alert_intervals(p)[["status", "ongoing"]].values.tolist()
    [['pending', False], ['firing', False]]
    """
    cols = ["start", "end", F_STATE, "ongoing"]
    if not len(points) or F_STATE not in points:
        return pd.DataFrame(columns=cols)
    now = now if now is not None else pd.Timestamp.now(tz="UTC")
    keys = alert_key_columns(points)
    out = []
    for _key, g in points.sort_values(TIME).groupby(keys, dropna=False, sort=False):
        status = g[F_STATE].astype(str).tolist()
        times = list(g[TIME])
        starts = [0] + [i for i in range(1, len(status)) if status[i] != status[i - 1]]
        tags = {k: g.iloc[0][k] for k in g.columns if k not in _ALERT_FIELDS or k == "key"}
        sev = g.iloc[-1].get(R.T_SEVERITY)
        for j, i0 in enumerate(starts):
            if status[i0] not in (STATE_FIRING, STATE_PENDING):
                continue
            nxt = starts[j + 1] if j + 1 < len(starts) else None
            last = g.iloc[(nxt if nxt is not None else len(g)) - 1]
            out.append(
                {
                    **tags,
                    "start": times[i0],
                    "end": times[nxt] if nxt is not None else now,
                    F_STATE: status[i0],
                    "ongoing": nxt is None,
                    "severity": sev,
                    F_MESSAGE: last.get(F_MESSAGE),
                    F_VALUE: last.get(F_VALUE),
                }
            )
    df = pd.DataFrame(out)
    return df if len(df) else pd.DataFrame(columns=cols)


def deliveries(conn: Conn, scope: Scope, limit: int = 2000) -> pd.DataFrame:
    """The webhook delivery log in the range (newest first)."""
    q = f"SELECT * FROM {ident(R.DELIVERY)}{scope.where(segment=False)} GROUP BY * ORDER BY time DESC LIMIT {limit}"
    df = query_df(conn, q)
    return df.sort_values(TIME, ascending=False).reset_index(drop=True) if len(df) else df


# Data drift ---------------------------------------------------------------------------


def budget_spent(conn: Conn, seconds: int) -> pd.DataFrame:
    """Per model over the last ``seconds``: drift alarms raised (``alarms``: window-level
    univariate verdicts, every segment included — what the false-alarm budget counts) and
    the mean event rate (``events_per_s``: sets the window rate of ``size_events`` models)."""
    since = f"time > now() - {int(seconds)}s"
    res = run(
        conn,
        [
            f"SELECT sum({ident(F_DRIFT)}) AS alarms FROM {ident(R.DRIFT_SUMMARY)} WHERE {since} AND {_summary_only()} "
            f"GROUP BY {ident(R.T_MODEL)}",
            f"SELECT mean({ident(F_EVENTS_PER_S)}) AS events_per_s FROM {ident(R.WINDOW)} WHERE {since} "
            f"GROUP BY {ident(R.T_MODEL)}",
        ],
    )
    alarms, rate = frame(res[0]), frame(res[1])
    out = pd.DataFrame({R.T_MODEL: pd.Series(dtype=str)})
    for df in (alarms, rate):
        if len(df):
            out = out.merge(df.drop(columns=[TIME], errors="ignore"), on=R.T_MODEL, how="outer")
    out["alarms"] = pd.to_numeric(col(out, "alarms"), errors="coerce").fillna(0).astype(int)
    out["events_per_s"] = pd.to_numeric(col(out, "events_per_s"), errors="coerce")
    return out


def _summary_only() -> str:
    return f"{ident(R.T_DETECTOR)} = {lit(SUMMARY_DETECTOR)}"


def tag_in(key: str, values: Iterable[str]) -> str:
    """An InfluxQL condition: tag ``key`` equals one of ``values`` (an OR-list, no regex
    to escape; InfluxDB answers it from its index).

    >>> print(tag_in("feature", ["a", "b'c"]))
    ("feature" = 'a' OR "feature" = 'b\\'c')
    """
    vals = list(dict.fromkeys(values))
    if not vals:
        raise ValueError("tag_in needs at least one value")
    return "(" + " OR ".join(f"{ident(key)} = {lit(v)}" for v in vals) + ")"


def drift_heatmap(conn: Conn, scope: Scope, features: Sequence[str] | None = None) -> pd.DataFrame:
    """Feature × time bucket: ``share`` of the bucket's windows whose test found drift
    (the mean of the 0/1 ``drift`` field) and the smallest p-value (``p_min``), for
    ``features`` only (default: every feature).

    Two aggregates only: over 7 days × 50 features each one costs InfluxDB a full
    decode of a field (~0.1-0.3 s), so the tooltip's evidence is the smallest p-value;
    restricted to the page's top 20 features the query costs a fifth of that.
    """
    extra = tag_in(R.T_FEATURE, features) if features else ""
    q = (
        f"SELECT mean({ident(F_DRIFT)}) AS share, min({ident(F_P_VALUE)}) AS p_min FROM {ident(R.DRIFT)}"
        f"{scope.where(extra)} GROUP BY time({scope.rng.heat_bucket}), {ident(R.T_FEATURE)} fill(none)"
    )
    return query_df(conn, q)


def drift_counts(conn: Conn, scope: Scope) -> pd.DataFrame:
    """Per feature over the range: how many windows' tests found drift (``drifted``) — one
    small aggregate (one integer field, one aggregate: a second one, e.g. a count, doubles
    InfluxDB's work) that picks the heatmap's rows before the heatmap is queried."""
    q = f"SELECT sum({ident(F_DRIFT)}) AS drifted FROM {ident(R.DRIFT)}{scope.where()} GROUP BY {ident(R.T_FEATURE)}"
    df = query_df(conn, q)
    if len(df):
        df["drifted"] = pd.to_numeric(df["drifted"], errors="coerce").fillna(0).astype(int)
        df = df.drop(columns=[TIME], errors="ignore")
    return df


def heatmap_rows(latest: pd.DataFrame, counts: pd.DataFrame, top: int = HEATMAP_TOP) -> list[str]:
    """Every feature in heatmap order: most drifting windows in the range first, then the
    latest window's drift rank (so a feature drifting now is near the top even when it
    just started). The page draws the first ``top`` and the rest on demand.

    >>> latest = pd.DataFrame({"feature": ["a", "b", "c"], "drift_rank": [1, 2, 3]})
    >>> counts = pd.DataFrame({"feature": ["a", "b", "c"], "drifted": [1, 9, 0]})
    >>> heatmap_rows(latest, counts)
    ['b', 'a', 'c']
    """
    rank = latest.sort_values("drift_rank").drop_duplicates(R.T_FEATURE)
    order = pd.DataFrame({R.T_FEATURE: rank[R.T_FEATURE].tolist(), "r": range(len(rank))})
    if len(counts) and R.T_FEATURE in counts:
        order = order.merge(counts[[R.T_FEATURE, "drifted"]], on=R.T_FEATURE, how="left")
    else:
        order["drifted"] = 0
    order["drifted"] = order["drifted"].fillna(0)
    return order.sort_values(["drifted", "r"], ascending=[False, True], kind="stable")[R.T_FEATURE].tolist()


def drift_latest(conn: Conn, scope: Scope) -> pd.DataFrame:
    """The latest window's result of every feature and detector in the range.

    Columns: feature, detector, time, statistic, p_value, threshold, drift, the
    effect sizes, n_ref, n_cur (whatever the worker wrote) plus ``drift_rank``
    (1 = most significant) and ``impact_rank`` (1 = largest effect, weighted by
    feature importance when the worker reports one).
    """
    stmts = [
        f"SELECT * FROM {ident(R.DRIFT)}{scope.where()} GROUP BY {ident(R.T_FEATURE)}, {ident(R.T_DETECTOR)}"
        " ORDER BY time DESC LIMIT 1",
        # impact is computed once per reference, maybe long before the range
        f"SELECT {ident(F_NORMALIZED)}, {ident(F_IMPORTANCE)} FROM {ident(R.IMPACT)}"
        f"{Scope(scope.rng, scope.model, scope.version).where(segment=False, time_=False)}"
        f" GROUP BY {ident(R.T_FEATURE)} ORDER BY time DESC LIMIT 1",
    ]
    df, imp = (frame(s) for s in run(conn, stmts))
    if not len(df):
        return df
    if len(imp) and R.T_FEATURE in imp:
        imp = imp.rename(columns={F_IMPORTANCE: "importance_raw"}).drop(columns=[TIME], errors="ignore")
        df = df.merge(imp[[R.T_FEATURE, F_NORMALIZED]], on=R.T_FEATURE, how="left")
    return rank_features(df)


def rank_features(df: pd.DataFrame) -> pd.DataFrame:
    """Rank features by drift (significance) and by impact (effect size × importance).

    *By drift*: drifting first, then by p-value ascending (the statistic over its
    threshold ranks distance-only detectors, which have no p-value). *By impact*:
    the size of the shift, not its significance (large windows make tiny shifts
    significant): the Jensen-Shannon distance (bounded 0..1, defined for numeric
    and categorical features; else PSI) times the feature's normalized importance
    to the model output (``dw_impact``) when the worker computed one — so a big
    shift in an input the model ignores ranks low.
    """
    df = df.copy()
    p = pd.to_numeric(col(df, F_P_VALUE), errors="coerce")
    stat = pd.to_numeric(col(df, F_STATISTIC), errors="coerce")
    thr = pd.to_numeric(col(df, F_THRESHOLD), errors="coerce")
    ratio = (stat / thr.where(thr > 0)).where(p.isna())  # only meaningful without a p-value
    drift = pd.to_numeric(col(df, F_DRIFT), errors="coerce").fillna(0).astype(bool)
    df[F_DRIFT] = drift
    key = pd.DataFrame({"d": ~drift, "p": p.fillna(1.0), "r": -ratio.fillna(0.0)})
    order = key.sort_values(["d", "p", "r"], kind="stable").index
    df.loc[order, "drift_rank"] = range(1, len(df) + 1)
    effect = pd.to_numeric(col(df, F_JS), errors="coerce")
    effect = effect.fillna(pd.to_numeric(col(df, F_PSI), errors="coerce"))
    imp = pd.to_numeric(col(df, F_NORMALIZED), errors="coerce")
    df["importance"] = imp
    df["impact"] = effect * imp.fillna(1.0) if imp.notna().any() else effect
    df["impact_rank"] = df["impact"].rank(ascending=False, method="first", na_option="bottom")
    df["drift_rank"] = df["drift_rank"].astype(int)
    df["impact_rank"] = df["impact_rank"].astype(int)
    df["stat_over_threshold"] = ratio
    return df.sort_values("drift_rank").reset_index(drop=True)


def drift_feature_series(conn: Conn, scope: Scope, feature: str) -> pd.DataFrame:
    """One feature over time: per bucket the smallest p-value, largest statistic,
    threshold, mean effect sizes and window sizes, and how many windows drifted."""
    w = scope.where(f"{ident(R.T_FEATURE)} = {lit(feature)}")
    q = (
        f"SELECT min({ident(F_P_VALUE)}) AS p_value, max({ident(F_STATISTIC)}) AS statistic,"
        f" max({ident(F_THRESHOLD)}) AS threshold, mean({ident(F_PSI)}) AS psi, mean({ident(F_JS)}) AS js,"
        f" mean({ident(F_WASSERSTEIN)}) AS wasserstein, mean({ident(F_N_REF)}) AS n_ref,"
        f" mean({ident(F_N_CUR)}) AS n_cur, count({ident(F_STATISTIC)}) AS n, sum({ident(F_DRIFT)}) AS n_drift,"
        f" mean({ident(F_BAND_LOWER)}) AS band_lower, mean({ident(F_BAND_UPPER)}) AS band_upper,"
        f" mean({ident(F_EFFECT)}) AS effect"
        f" FROM {ident(R.DRIFT)}{w} GROUP BY time({scope.rng.bucket}), {ident(R.T_DETECTOR)} fill(none)"
    )
    df = query_df(conn, q)
    if len(df):
        df["n_drift"] = pd.to_numeric(df["n_drift"], errors="coerce").fillna(0).astype(int)
    return df


def drift_feature_windows(conn: Conn, scope: Scope, feature: str, limit: int = 20) -> pd.DataFrame:
    """The last ``limit`` windows of one feature, every field as written (newest first)."""
    w = scope.where(f"{ident(R.T_FEATURE)} = {lit(feature)}")
    df = query_df(conn, f"SELECT * FROM {ident(R.DRIFT)}{w} ORDER BY time DESC LIMIT {limit}")
    return df


def drift_summary_series(conn: Conn, scope: Scope) -> pd.DataFrame:
    """Share of features drifting per bucket (mean over the bucket's windows) and the latest summary."""
    q = (
        f"SELECT mean({ident(F_SHARE_DRIFTED)}) AS share_drifted, max({ident(F_N_DRIFTED)}) AS n_drifted"
        f" FROM {ident(R.DRIFT_SUMMARY)}{scope.where(_summary_only())} GROUP BY time({scope.rng.bucket}) fill(none)"
    )
    return query_df(conn, q)


def drifting_since(summ: pd.DataFrame) -> pd.Timestamp | None:
    """Start of the current drift: the first of the trailing buckets in which some feature
    drifted, when the latest bucket is one of them and at least two are (a lone false alarm
    of a single window is not "a change"); None otherwise.

    >>> t = pd.date_range("2026-01-01 09:00", periods=6, freq="1min", tz="UTC")
    >>> str(drifting_since(pd.DataFrame({"time": t, "n_drifted": [0, 1, 0, 2, 3, 3]})))
    '2026-01-01 09:03:00+00:00'
    >>> drifting_since(pd.DataFrame({"time": t, "n_drifted": [0, 0, 0, 0, 0, 1]})) is None
    True
    """
    if not len(summ) or "time" not in summ:
        return None
    s = summ.sort_values("time")
    hot = (pd.to_numeric(col(s, F_N_DRIFTED), errors="coerce").fillna(0) > 0).to_numpy()
    if not hot[-1]:
        return None
    k = len(hot) - 1
    while k > 0 and hot[k - 1]:
        k -= 1
    return s["time"].iloc[k] if len(hot) - k >= 2 else None


def drift_summary_latest(conn: Conn, scope: Scope) -> pd.DataFrame:
    """The latest univariate drift summary (one row per version)."""
    q = f"SELECT * FROM {ident(R.DRIFT_SUMMARY)}{scope.where(_summary_only())} GROUP BY * ORDER BY time DESC LIMIT 1"
    df = query_df(conn, q)
    return df.sort_values(TIME, ascending=False).reset_index(drop=True) if len(df) else df


# Histograms ---------------------------------------------------------------------------

_BIN = re.compile(r"^b(\d+)$")  # count of bin i
_EDGE = re.compile(r"^e(\d+)$")  # lower (closed) edge of bin i, i >= 1
_LABEL = re.compile(r"^l(\d+)$")  # label of bin i (categorical)
OTHER_LABEL = "__other__"


def histogram(conn: Conn, scope: Scope, feature: str, at: pd.Timestamp | None = None) -> dict[str, pd.DataFrame]:
    """Reference and current bins of a feature: ``{"reference": df, "current": df}``.

    The current histogram is the feature's latest window in the range (or the
    window at ``at``); the reference is the latest reference histogram written for
    the model/version. Each DataFrame has ``bin`` (label), ``order``, ``count`` and
    ``share`` (count / total), ``time`` (the point's), plus ``lo``/``hi`` for numeric bins.
    """
    ftag = f"{ident(R.T_FEATURE)} = {lit(feature)}"
    cur_where = scope.where(ftag)
    if at is not None:
        ns = int(pd.Timestamp(at).value)
        cur_where = scope.where(ftag, f"time <= {ns}")
    stmts = [
        f"SELECT * FROM {ident(R.HISTOGRAM)}{cur_where} ORDER BY time DESC LIMIT 1",
        # the reference is written once per model version, maybe long before the range
        f"SELECT * FROM {ident(R.REFERENCE_HISTOGRAM)}{scope.where(ftag, time_=False)} ORDER BY time DESC LIMIT 1",
    ]
    cur, ref = (frame(s) for s in run(conn, stmts))
    return {"reference": parse_histogram(ref), "current": parse_histogram(cur)}


def parse_histogram(df: pd.DataFrame) -> pd.DataFrame:
    """Bins of one histogram point (see :func:`histogram`); empty when there is none.

    The worker's format (:func:`detectors.histograms.histogram_fields`): counts
    ``b00``…, numeric edges ``e01``… (``e<i>`` = lower edge of bin ``i``; bin 0
    starts at -inf, the last bin ends at +inf), categorical labels ``l00``…
    Noised histograms (sensitive features) carry no edges or labels, and ``noised=1``
    with the noise's ``epsilon`` (columns ``noised``, ``epsilon`` of the result).

    >>> p = pd.DataFrame([{"time": 0, "b00": 1, "b01": 2, "b02": 1, "e01": 0.0, "e02": 1.5, "n_bins": 3}])
    >>> parse_histogram(p)[["bin", "count", "share"]].values.tolist()
    [['< 0', 1, 0.25], ['[0, 1.5)', 2, 0.5], ['≥ 1.5', 1, 0.25]]
    """
    if not len(df):
        return pd.DataFrame(columns=["bin", "order", "count", "share"])
    row = df.iloc[0].to_dict()
    bins: dict[int, float] = {}
    edges: dict[int, float] = {}
    labels: dict[int, str] = {}
    for k, v in row.items():
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        if m := _BIN.match(k):
            bins[int(m.group(1))] = float(v)
        elif m := _EDGE.match(k):
            edges[int(m.group(1))] = float(v)
        elif m := _LABEL.match(k):
            labels[int(m.group(1))] = "other" if v == OTHER_LABEL else str(v)
    if not bins:
        return pd.DataFrame(columns=["bin", "order", "count", "share"])
    n = max(bins) + 1
    rows: list[dict[str, Any]] = []
    for i in range(n):
        lo, hi = edges.get(i), edges.get(i + 1)
        if i in labels:
            label = labels[i]
        elif i == 0 and hi is not None:
            label = f"< {hi:.4g}"
        elif i == n - 1 and lo is not None:
            label = f"≥ {lo:.4g}"
        elif lo is not None and hi is not None:
            label = f"[{lo:.4g}, {hi:.4g})"
        else:
            label = f"bin {i}"
        rows.append({"bin": label, "order": i, "count": max(bins.get(i, 0.0), 0.0)})
    out = pd.DataFrame(rows)
    total = out["count"].sum()
    out["share"] = out["count"] / total if total > 0 else 0.0
    out["count"] = out["count"].map(lambda x: int(round(x)))
    out[TIME] = row.get(TIME)
    out["noised"] = bool(row.get("noised") or 0)
    eps = row.get("epsilon")  # the Laplace noise's ε, on noised histograms only
    out["epsilon"] = float(eps) if eps is not None and eps == eps else float("nan")
    return out


# Data quality ---------------------------------------------------------------------------


def quality_series(conn: Conn, scope: Scope, rates: tuple[str, ...] = QUALITY_RATES) -> pd.DataFrame:
    """Per feature and bucket: the mean of each of ``rates`` over the bucket's windows
    (ask for the rate on screen only: each one is a full decode of a field)."""
    sel = ", ".join(f"mean({ident(r)}) AS {ident(r)}" for r in rates)
    q = (
        f"SELECT {sel} FROM {ident(R.QUALITY)}{scope.where()}"
        f" GROUP BY time({scope.rng.heat_bucket}), {ident(R.T_FEATURE)} fill(none)"
    )
    return query_df(conn, q)


def quality_latest(conn: Conn, scope: Scope) -> pd.DataFrame:
    """The latest window's quality result of every feature."""
    q = f"SELECT * FROM {ident(R.QUALITY)}{scope.where()} GROUP BY {ident(R.T_FEATURE)} ORDER BY time DESC LIMIT 1"
    return query_df(conn, q)


def deadletters(conn: Conn, scope: Scope) -> pd.DataFrame:
    """Dead-lettered messages per reason and bucket. Messages too broken to name a model
    have no model tag; they are counted on every model's page."""
    where = [scope.rng.clause()]
    if scope.model is not None:
        where.append(f"({ident(R.T_MODEL)} = {lit(scope.model)} OR {ident(R.T_MODEL)} = '')")
    q = (
        f"SELECT sum({ident(F_COUNT)}) AS count FROM {ident(R.DEADLETTER)} WHERE {' AND '.join(where)}"
        f" GROUP BY time({scope.rng.bucket}), {ident(R.T_REASON)} fill(none)"
    )
    return query_df(conn, q)


def deadletter_models(conn: Conn, scope: Scope, limit: int = 5000) -> pd.DataFrame:
    """Dead-lettered events per reason and model: ``reason``, ``model`` (the model the messages named,
    also one missing from the monitor config; ``—`` when none could be read), ``count``.

    The model of an unknown model id is the ``model_id`` field (never a tag: attacker-controlled),
    so this reads the latest ``limit`` points of the range and sums them here.
    """
    where = [scope.rng.clause()]
    if scope.model is not None:
        where.append(f"({ident(R.T_MODEL)} = {lit(scope.model)} OR {ident(R.T_MODEL)} = '')")
    q = (
        f"SELECT {ident(F_COUNT)}, {ident(F_DL_MODEL)}, {ident(R.T_MODEL)}, {ident(R.T_REASON)} "
        f"FROM {ident(R.DEADLETTER)} WHERE {' AND '.join(where)} ORDER BY time DESC LIMIT {int(limit)}"
    )
    df = query_df(conn, q)
    if not len(df):
        return pd.DataFrame(columns=["reason", "model", "count"])
    named = df[F_DL_MODEL] if F_DL_MODEL in df else pd.Series(None, index=df.index, dtype=object)
    tagged = df[R.T_MODEL] if R.T_MODEL in df else pd.Series(None, index=df.index, dtype=object)
    df["model"] = named.where(named.notna() & (named != ""), tagged).fillna("—").replace("", "—")
    out = df.groupby(["reason", "model"], as_index=False)[F_COUNT].sum()
    return out.sort_values(F_COUNT, ascending=False).reset_index(drop=True)


# Performance ------------------------------------------------------------------------------


def performance_series(conn: Conn, scope: Scope) -> pd.DataFrame:
    """Realized (``detector=realized``) and estimated (``detector=cbpe``) performance per
    metric and bucket; ``kind`` says which. CBPE accuracy also has its band (``lower``,
    ``upper``), every CBPE metric its reference-chunk band (``band_lower``, ``band_upper``); realized accuracy CBPE's estimate of the same labelled rows (``cbpe_value``)
    and ``estimation_error``. Buckets of "not calibrated" points only have no value and are
    left out (those points have no ``value`` field)."""
    q = (
        f"SELECT mean({ident(F_VALUE)}) AS value, mean({ident(F_LOWER)}) AS lower, mean({ident(F_UPPER)}) AS upper,"
        f" mean({ident(F_CBPE_VALUE)}) AS cbpe_value, mean({ident(F_ESTIMATION_ERROR)}) AS estimation_error,"
        f" mean({ident(F_BAND_LOWER)}) AS band_lower, mean({ident(F_BAND_UPPER)}) AS band_upper"
        f" FROM {ident(R.PERFORMANCE)}"
        f"{scope.where(f'{ident(R.T_METRIC)} != {lit(LABEL_JOIN)}')}"
        f" GROUP BY time({scope.rng.bucket}), {ident(R.T_METRIC)}, {ident(R.T_DETECTOR)} fill(none)"
    )
    df = query_df(conn, q)
    if len(df):
        det = col(df, R.T_DETECTOR, "").astype(str)
        df["kind"] = det.map({REALIZED: "realized", CBPE: "estimated"}).fillna(det)
    return df


def performance_labels(conn: Conn, scope: Scope) -> pd.DataFrame:
    """Label coverage and delay per bucket.

    Coverage = labelled share of predictions, from the label join's cumulative
    counters (``matched / predictions`` at the bucket's last window); delay = the
    median and 95th percentile seconds from prediction to label of the rows
    joined in the bucket's windows (mean of the windows' p50, max of their p95).
    """
    g = f" GROUP BY time({scope.rng.bucket}) fill(none)"
    stmts = [
        f"SELECT last({ident(F_MATCHED)}) AS matched, last({ident(F_PREDICTIONS)}) AS predictions,"
        f" last({ident(F_PENDING)}) AS pending, last({ident(F_EXPIRED)}) AS expired FROM {ident(R.PERFORMANCE)}"
        f"{scope.where(f'{ident(R.T_METRIC)} = {lit(LABEL_JOIN)}')}{g}",
        f"SELECT mean({ident(F_DELAY_P50)}) AS delay_p50, max({ident(F_DELAY_P95)}) AS delay_p95,"
        f" sum({ident(F_N_LABELS)}) AS n_labels FROM {ident(R.PERFORMANCE)}"
        f"{scope.where(f'{ident(R.T_DETECTOR)} = {lit(REALIZED)}', tag_in(R.T_METRIC, _DELAY_METRICS))}{g}",
    ]
    join, delay = (frame(s) for s in run(conn, stmts))
    if len(join):
        pred = pd.to_numeric(join["predictions"], errors="coerce")
        join[F_LABEL_COVERAGE] = pd.to_numeric(join["matched"], errors="coerce") / pred.where(pred > 0)
    if len(join) and len(delay):
        return join.merge(delay, on=TIME, how="outer").sort_values(TIME)
    return join if len(join) else delay


#: every realized metric of a window carries its delays: read them from accuracy (classifiers)
#: or mae (regressions), one of which every model has
_DELAY_METRICS = ("accuracy", "mae")


def prediction_drift(conn: Conn, scope: Scope) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Prediction drift per output and bucket (smallest p-value, largest statistic,
    threshold, windows tested), and the latest window's tests: the early warning
    before labels arrive. Class shares and the summary rows are left out."""
    g = f" GROUP BY time({scope.rng.bucket}), {ident(R.T_FEATURE)} fill(none)"
    w = scope.where(
        f"{ident(R.T_FEATURE)} != {lit(PRED_ALL)}",
        f"{ident(R.T_DETECTOR)} != 'summary'",
        f"{ident(R.T_DETECTOR)} != 'share'",
    )
    stmts = [
        f"SELECT min({ident(F_P_VALUE)}) AS p_value, max({ident(F_STATISTIC)}) AS statistic,"
        f" max({ident(F_THRESHOLD)}) AS threshold, count({ident(F_STATISTIC)}) AS n FROM {ident(R.PREDICTION)}{w}{g}",
        f"SELECT * FROM {ident(R.PREDICTION)}{w} GROUP BY {ident(R.T_FEATURE)}, {ident(R.T_DETECTOR)}"
        " ORDER BY time DESC LIMIT 1",
    ]
    series, latest = (frame(s) for s in run(conn, stmts))
    return series, latest


def evaluator_status(conn: Conn, scope: Scope) -> pd.DataFrame:
    """The latest ``dw_status`` of each row-based evaluator (prediction drift, impact, CBPE):
    ``detector``, ``computed`` (0/1), ``reason`` (why not), ``time``."""
    q = (
        f"SELECT * FROM {ident(R.STATUS)}{scope.where(segment=False)} GROUP BY {ident(R.T_DETECTOR)}"
        " ORDER BY time DESC LIMIT 1"
    )
    return query_df(conn, q)


def performance_latest(conn: Conn, scope: Scope) -> pd.DataFrame:
    q = f"SELECT * FROM {ident(R.PERFORMANCE)}{scope.where()} GROUP BY * ORDER BY time DESC LIMIT 1"
    return query_df(conn, q)


# Adversarial -------------------------------------------------------------------------------


def adversarial_series(conn: Conn, scope: Scope) -> pd.DataFrame:
    """The combined score and every numeric component, mean per bucket."""
    q = f"SELECT mean(*) FROM {ident(R.ADVERSARIAL)}{scope.where()} GROUP BY time({scope.rng.bucket}) fill(none)"
    return query_df(conn, q, strip_prefix="mean_")


P_SUFFIX = "_p_value"


def adversarial_components(columns: Sequence[str]) -> list[str]:
    """Component names of ``dw_adversarial`` from its ``<name>_p_value`` fields.

    >>> adversarial_components(["score", "p_value", "outlier_p_value", "outlier_rate", "extraction_p_value"])
    ['extraction', 'outlier']
    """
    return sorted(c[: -len(P_SUFFIX)] for c in columns if c.endswith(P_SUFFIX) and c != F_P_VALUE)


def adversarial_scored(components: Sequence[str]) -> list[str]:
    """The components that make the combined score: source contrasts and extraction (the others are
    population rates against the reference — "the inputs moved" — in the score only with
    ``score_population: true``).

    >>> adversarial_scored(["extraction", "low_margin", "low_margin_source", "outlier", "outlier_source"])
    ['extraction', 'low_margin_source', 'outlier_source']
    """
    return [c for c in components if c == "extraction" or c.endswith("_source")]


def adversarial_latest(conn: Conn, scope: Scope) -> pd.DataFrame:
    q = f"SELECT * FROM {ident(R.ADVERSARIAL)}{scope.where()} GROUP BY * ORDER BY time DESC LIMIT 1"
    return query_df(conn, q)


ADVERSARIAL_VERDICT = (
    "score",
    "flagged_by",
    "top_component",
    "low_margin_source_suspect",
    "outlier_source_suspect",
    "extraction_flagged",
)


def adversarial_flags(conn: Conn, scope: Scope, limit: int = 20) -> pd.DataFrame:
    """The latest flagged windows with their verdict: which components raised the flag, and the suspect source."""
    fields = ", ".join(ident(f) for f in ADVERSARIAL_VERDICT)
    q = (
        f"SELECT {fields} FROM {ident(R.ADVERSARIAL)}{scope.where(f'{ident(F_FLAGGED)} = true')}"
        f" ORDER BY time DESC LIMIT {int(limit)}"
    )
    return query_df(conn, q)


def sources(conn: Conn, scope: Scope) -> pd.DataFrame:
    """Per source (top-K only): latest point, and how many windows flagged it in the range."""
    w = scope.where()
    stmts = [
        f"SELECT * FROM {ident(R.SOURCE)}{w} GROUP BY {ident(R.T_SOURCE)} ORDER BY time DESC LIMIT 1",
        f"SELECT count({ident(F_SCORE)}) AS windows, max({ident(F_SCORE)}) AS max_score"
        f" FROM {ident(R.SOURCE)}{w} GROUP BY {ident(R.T_SOURCE)}",
        f"SELECT count({ident(F_SCORE)}) AS flagged_windows FROM {ident(R.SOURCE)}{w}"
        f" AND ({ident(F_SOURCE_FLAG)} = true OR {ident(F_EXTRACTION_FLAG)} = true) GROUP BY {ident(R.T_SOURCE)}",
    ]
    latest, counts, flagged = (frame(s) for s in run(conn, stmts))
    if not len(latest):
        return latest
    for extra in (counts, flagged):
        if len(extra):
            latest = latest.merge(extra.drop(columns=[TIME], errors="ignore"), on=R.T_SOURCE, how="left")
    if "flagged_windows" not in latest:
        latest["flagged_windows"] = 0
    latest["flagged_windows"] = latest["flagged_windows"].fillna(0).astype(int)
    return latest.sort_values(["flagged_windows", TIME], ascending=False).reset_index(drop=True)


def timed(fn: Any, *a: Any, **kw: Any) -> tuple[Any, float]:
    """``(fn(*a, **kw), seconds)`` — for the benchmark."""
    t = time.perf_counter()
    out = fn(*a, **kw)
    return out, time.perf_counter() - t
