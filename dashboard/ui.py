# size: the frame every page shares (login, filters, refresh, empty states); each helper is small and used by all pages
"""The frame every page shares: settings, login, filters, auto-refresh, empty states, links.

The entry script (``app.py``) calls :func:`start` (login gate + sidebar filters)
before it runs the selected page, because widgets made by the entry script keep
their state when the user switches pages. A page gets the :class:`Ctx` from
:func:`current` and calls :func:`body` with its render function, which runs
inside an ``st.fragment`` that reruns every ``DRIFTWATCH_DASHBOARD_REFRESH_SECONDS``.

Filters live in ``st.session_state`` (so the sidebar navigation keeps them) and
are mirrored to the URL's query parameters (``?model=churn&version=2&range=7d``),
so a copied link or an ``st.page_link`` opens the same view.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import pandas as pd
import streamlit as st

from dashboard import auth
from dashboard import data as D
from dashboard import queries as Q
from dashboard.config import PAGES, DashboardSettings, load_settings, monitor_model

log = logging.getLogger(__name__)

FILTERS = ("model", "version", "segment", "range", "from", "to", "feature")
ALL_VERSIONS = "(all versions)"
ALL_TRAFFIC = "(all traffic)"
CUSTOM = "custom"
AUTO = "auto"
#: the default range follows the data: from shortly before the first window up to now
DEFAULT_RANGE = AUTO
RANGE_LABELS = {
    AUTO: "since the data started",
    "15m": "last 15 minutes",
    "1h": "last hour",
    "6h": "last 6 hours",
    "24h": "last 24 hours",
    "7d": "last 7 days",
    "30d": "last 30 days",
    CUSTOM: "custom dates",
}

NO_DATA_HINT = (
    "**No data yet: is the worker running?** Results appear when the first window closes. "
    "Start everything locally with `driftwatch up`, or a worker with `driftwatch worker`, "
    "and publish traffic (`driftwatch demo`)."
)


def _k(name: str) -> str:
    return f"dw_{name}"


@dataclass
class Ctx:
    """What a page needs: settings, connection, who is looking and what is selected."""

    settings: DashboardSettings
    conn: Q.Conn
    user: str | None
    models: list[str]  # the models this user may see
    model: str  # the selected one (a page starts only when the user may see some model)
    version: str | None
    segment: str | None
    rng: Q.TimeRange
    range_label: str
    page: str
    params: dict[str, str] = field(default_factory=dict)
    #: when the first window of these models closed (None: unknown); charts start no earlier
    data_start: pd.Timestamp | None = None

    @property
    def scope(self) -> Q.Scope:
        """The selected model/version/segment over the selected range."""
        return Q.Scope(self.rng, self.model, self.version, self.segment)

    @property
    def all_scope(self) -> Q.Scope:
        """Every model over the selected range (the overview)."""
        return Q.Scope(self.rng)

    def link_params(self, **override: str | None) -> dict[str, str]:
        """The current filters as query parameters (for ``st.page_link``)."""
        p = {k: v for k, v in self.params.items() if k != "feature"}
        for k, v in override.items():
            if v is None:
                p.pop(k, None)
            else:
                p[k] = v
        return p


# Login ------------------------------------------------------------------------------------


def _secrets_have_auth() -> bool:
    try:
        return "auth" in st.secrets
    except FileNotFoundError:  # no secrets.toml at all (or an unparsable one: StreamlitSecretNotFoundError)
        return False


def _load_access(settings: DashboardSettings) -> auth.Access | None:
    if settings.dashboard_access is None:
        return None
    try:
        return auth.cached_access(settings.dashboard_access)
    except auth.AccessError as e:
        st.error(f"The dashboard's access file is unusable, so nobody is let in: {e}")
        st.stop()
    return None


#: session-state key of the :class:`Login` (only ever set by the login form)
LOGIN_KEY = "dw__login"


@dataclass(frozen=True)
class Login:
    """Who this browser session proved to be with the password form.

    Kept in session state as an instance of this class: a browser can send widget
    values under any name it likes, but they arrive as strings, numbers or bytes,
    never as a ``Login``, so a forged ``dw__login`` (or the old ``dw_auth_ok``) logs
    nobody in.
    """

    user: str | None
    named: bool


def _session_login() -> Login | None:
    try:
        value = st.session_state.get(LOGIN_KEY)
    except Exception:  # a forged widget state can make session-state reads raise
        log.debug("dashboard: unreadable login state", exc_info=True)
        return None
    return value if isinstance(value, Login) else None


def scrub_forged_widget_state() -> int:
    """Drop widget values the browser sent for ids that no widget can have; return how many.

    Streamlit keeps whatever ``WidgetState`` ids a client sends; one that is not an element
    id (e.g. ``dw_auth_ok``) makes the next widget call raise a KeyError, whose traceback
    went to the client. Called at the start of every full and fragment rerun.
    """
    try:
        from streamlit.runtime.scriptrunner_utils.script_run_context import get_script_run_ctx
        from streamlit.runtime.state.common import is_element_id

        run = get_script_run_ctx()
        if run is None:
            return 0
        safe = run.session_state
        with safe._lock:  # Streamlit has no public API for this
            states = safe._state._new_widget_state.states
            forged = [k for k in list(states) if not is_element_id(k)]
            for k in forged:
                states.pop(k, None)
    except Exception:  # a Streamlit upgrade moved the internals: the gate below still holds
        log.debug("dashboard: cannot scrub widget state", exc_info=True)
        return 0
    if forged:
        log.warning("dashboard: dropped %d widget value(s) sent for ids no widget has", len(forged))
    return len(forged)


def authorize(settings: DashboardSettings) -> tuple[str | None, auth.Access | None, bool] | None:
    """``(user, access, named)`` of this session right now, or None if it may see nothing.

    Renders nothing, so the auto-refreshing fragments call it before each run: the login
    (password form or OIDC) is checked again and the access file re-read (short cache).
    """
    try:
        access = auth.cached_access(settings.dashboard_access) if settings.dashboard_access is not None else None
    except auth.AccessError:
        return None
    mode = auth.resolve_mode(settings, access, _secrets_have_auth())
    if mode == "none":
        return None, access, False
    if mode == "oidc":
        if not st.user.get("is_logged_in", False):
            return None
        user = st.user.get("email") or st.user.get("name") or st.user.get("sub")
        return (str(user) if user else None), access, True
    who = _session_login()
    if who is None:
        return None
    return who.user, access, who.named


def logged_in(settings: DashboardSettings | None = None) -> bool:
    """Whether this session is past the login gate (True when no login is configured)."""
    return authorize(settings or load_settings()) is not None


def login(settings: DashboardSettings) -> tuple[str | None, auth.Access | None, bool]:
    """Run the login gate. Returns ``(user, access, named)`` or stops the script.

    ``named`` is True when the user proved who they are (own password or OIDC),
    which is when a per-user model list applies.
    """
    access = _load_access(settings)
    mode = auth.resolve_mode(settings, access, _secrets_have_auth())
    if mode == "none":
        return None, access, False
    if mode == "oidc":
        return _login_oidc(settings, access)
    return _login_password(settings, access)


def _login_oidc(settings: DashboardSettings, access: auth.Access | None) -> tuple[str | None, auth.Access | None, bool]:
    if not st.user.get("is_logged_in", False):
        st.title("driftwatch")
        problem = auth.authlib_problem()
        if problem:  # st.login would raise a traceback at the click: say what to install instead
            log.error("dashboard: %s", auth.oidc_install_hint(problem))
            st.error(auth.oidc_install_hint(problem), icon=":material/key_off:")
            st.stop()
        st.write("Log in with your organisation's account to see the monitored models.")
        if st.button("Log in", type="primary"):
            st.login()
        st.stop()
    user = st.user.get("email") or st.user.get("name") or st.user.get("sub")
    with st.sidebar:
        st.caption(f"Signed in as **{user}**")
        if st.button("Log out", key="dw_logout"):
            st.logout()
    return (str(user) if user else None), access, True


def client_address() -> str:
    """The browser's address as the dashboard sees it ("local" for loopback; behind a
    reverse proxy, the proxy's address — see docs/operations.md)."""
    try:
        ip = st.context.ip_address
    except Exception:  # no client context
        log.debug("dashboard: no client context", exc_info=True)
        return "local"
    return ip if isinstance(ip, str) and ip else "local"  # AppTest hands out a mock


def _login_password(
    settings: DashboardSettings, access: auth.Access | None
) -> tuple[str | None, auth.Access | None, bool]:
    ss = st.session_state
    who = _session_login()
    if who is not None:
        with st.sidebar:
            st.caption(f"Signed in{f' as **{who.user}**' if who.user else ''}")
            if st.button("Log out", key="dw_logout"):
                ss.pop(LOGIN_KEY, None)
                log.info("dashboard: %s logged out", repr(who.user) if who.user else "shared-password session")
                st.rerun()
        return who.user, access, who.named
    st.title("driftwatch")
    shared = settings.dashboard_password.get_secret_value() if settings.dashboard_password else None
    named_logins = bool(access and access.hashes)
    with st.form("dw_login"):
        name = st.text_input("User", help="your user name from the access file") if named_logins else ""
        pw = st.text_input("Password", type="password")
        submitted = st.form_submit_button("Log in", type="primary")
    if submitted:
        name, pw = str(name or "").strip()[:200], str(pw or "")
        addr = client_address()
        keys = [f"addr:{addr}", *([f"user:{name.lower()}"] if name else [])]
        wait = auth.THROTTLE.wait(keys)
        if wait > 0:
            log.warning(
                "dashboard: login%s from %s refused unchecked: locked out for %.0f s more",
                f" as {name!r}" if name else "",
                addr,
                wait,
            )
            st.error(f"Too many failed logins. Try again in {math.ceil(wait)} s.")
            st.stop()
        ok, named = auth.check_login(access, name, pw, shared)
        if ok:
            auth.THROTTLE.succeeded(keys)
            if named:
                log.info("dashboard: user %r logged in with their password from %s", name, addr)
            else:
                log.info("dashboard: logged in with the shared password from %s", addr)
            ss[LOGIN_KEY] = Login(name if named else None, named)
            st.rerun()
        lock = auth.THROTTLE.failed(keys)
        log.warning(
            "dashboard: failed login%s from %s (%d failure(s) in a row from this address%s)%s",
            f" as {name!r}" if name else "",
            addr,
            auth.THROTTLE.failures(keys[0]),
            f", {auth.THROTTLE.failures(keys[1])} for this user" if name else "",
            f"; locked out for {lock:.0f} s" if lock else "",
        )
        st.error(
            "Wrong user or password." + (f" Too many failed logins: try again in {math.ceil(lock)} s." if lock else "")
        )
    st.stop()
    return None, access, False


def still_allowed(ctx: Ctx) -> bool:
    """Whether the session that built ``ctx`` may still see what it shows: logged in as the
    same user, and every model of ``ctx.models`` still in the (re-read) access list."""
    who = authorize(ctx.settings)
    if who is None:
        return False
    user, access, named = who
    if user != ctx.user:
        return False
    return not (access is not None and len(access.allowed(user if named else None, ctx.models)) != len(ctx.models))


# Filters ------------------------------------------------------------------------------------


def _sync_from_url() -> None:
    """Copy filters from the URL into session state when the URL changed (a link was opened)."""
    ss = st.session_state
    qp = {k: st.query_params.get(k) for k in FILTERS if k in st.query_params}
    if qp and qp != ss.get("dw__qp_seen"):
        for k, v in qp.items():
            ss[_k(k)] = v
    ss["dw__qp_seen"] = qp


def _valid(key: str, options: list[str], default: str) -> None:
    ss = st.session_state
    if ss.get(_k(key)) not in options:
        ss[_k(key)] = default


def _parse_date(s: Any) -> date | None:
    try:
        return date.fromisoformat(str(s))
    except ValueError:
        return None


def _guarded(fn: Callable[..., Any], *a: Any, what: str = "") -> Any:
    """Run a query for the frame; on failure show what to do and stop the page."""
    try:
        return fn(*a)
    except Q.NoDatabase:
        return None
    except Q.InfluxUnavailable as e:
        st.error(
            f"**InfluxDB cannot be reached** ({e}). Start the local stack with `driftwatch stack up`, "
            "or point `DRIFTWATCH_INFLUX_URL` at your InfluxDB."
        )
        st.stop()
    except Q.InfluxError as e:
        st.error(f"InfluxDB refused a query{f' ({what})' if what else ''}: {e}")
        st.stop()


def start(page: str, settings: DashboardSettings | None = None) -> Ctx:
    """Login, then the sidebar filters. Returns the page's context (or stops with an empty state)."""
    settings = settings or load_settings()
    conn = Q.Conn.from_settings(settings)
    user, access, named = login(settings)
    ss = st.session_state
    _sync_from_url()

    seen = _guarded(D.models, conn, what="list models") or []
    allowed = access.allowed(user if named else None, seen) if access is not None else list(seen)

    data_start = _guarded(D.data_start, conn, tuple(allowed), what="first window") if allowed else None
    sb = st.sidebar
    sb.markdown("### Filters")
    if not allowed:
        if seen and access is not None:
            st.warning(
                f"Your account{f' ({user})' if user else ''} may not see any of the {len(seen)} monitored models. "
                "Ask an administrator to add them to the dashboard's access file."
            )
        else:
            st.info(NO_DATA_HINT + f"\n\nReading database `{conn.db}` at {conn.url}.")
        st.stop()
    asked = ss.get(_k("model"))
    if asked and asked not in allowed:  # e.g. /drift?model=iris: say so instead of showing another model
        st.warning(
            f"**No results for model `{asked}`**"
            + (" that you may see" if access is not None and asked in seen else " in InfluxDB")
            + f", so this shows `{allowed[0]}` instead. Models with results: "
            + ", ".join(f"`{m}`" for m in allowed)
            + ". A model's results appear once the worker has closed a "
            "window of it, and only for models declared in the monitor config.",
            icon=":material/help:",
        )
    _valid("model", allowed, allowed[0])
    model = sb.selectbox("Model", allowed, key=_k("model"))
    if model is None:  # a select box over a non-empty list always has a value
        st.stop()

    meta = D.fetch(versions=(D.versions, (conn, model)), segments=(D.segments, (conn, model)))
    vers = _guarded(meta.__getitem__, "versions") or []
    v_opts = [ALL_VERSIONS, *vers]
    _valid("version", v_opts, ALL_VERSIONS)
    version = sb.selectbox("Version", v_opts, key=_k("version"))

    segs = _guarded(meta.__getitem__, "segments") or []
    s_opts = [ALL_TRAFFIC, *segs]
    _valid("segment", s_opts, ALL_TRAFFIC)
    segment = sb.selectbox(
        "Segment",
        s_opts,
        key=_k("segment"),
        disabled=not segs,
        help="Segments are categorical features listed under `segments:` in the model's monitor config.",
    )

    r_opts = [AUTO, *Q.PRESETS, CUSTOM]
    _valid("range", r_opts, DEFAULT_RANGE)
    rkey = sb.selectbox("Time range", r_opts, key=_k("range"), format_func=lambda r: RANGE_LABELS.get(r, r))
    params = {"model": model, "range": rkey}
    if rkey == CUSTOM:
        today = datetime.now(UTC).date()
        d_from = _parse_date(ss.get(_k("from"))) or today - timedelta(days=7)
        d_to = _parse_date(ss.get(_k("to"))) or today
        picked = sb.date_input("Dates (UTC)", value=(d_from, d_to), max_value=today + timedelta(days=1))
        if isinstance(picked, (tuple, list)) and len(picked) == 2:
            d_from, d_to = picked
        ss[_k("from")], ss[_k("to")] = d_from.isoformat(), d_to.isoformat()
        start_dt = datetime.combine(d_from, time(0), tzinfo=UTC)
        end_dt = datetime.combine(d_to, time(0), tzinfo=UTC) + timedelta(days=1)
        rng = Q.TimeRange.between(start_dt, end_dt)
        label = f"{d_from.isoformat()} to {d_to.isoformat()} (UTC)"
        params.update({"from": d_from.isoformat(), "to": d_to.isoformat()})
    elif rkey == AUTO:
        rng, label = auto_range(data_start)
    else:
        rng = Q.TimeRange.last(rkey)
        label = RANGE_LABELS[rkey]
    if version != ALL_VERSIONS:
        params["version"] = version
    if segment != ALL_TRAFFIC:
        params["segment"] = segment
    if page == "drift" and ss.get(_k("feature")):
        params["feature"] = ss[_k("feature")]
    _write_url(params)

    if settings.dashboard_refresh_seconds:
        sb.caption(
            f"Auto-refresh every {settings.dashboard_refresh_seconds:g} s; query results reused for "
            f"{D.TTL_SECONDS:g} s."
        )
    sb.caption(f"InfluxDB `{conn.db}` at {conn.url} · times in UTC")
    ctx = Ctx(
        settings,
        conn,
        user,
        allowed,
        model,
        None if version == ALL_VERSIONS else version,
        None if segment == ALL_TRAFFIC else segment,
        rng,
        label,
        page,
        params,
        data_start,
    )
    ss["dw__ctx"] = ctx
    return ctx


def auto_range(data_start: pd.Timestamp | None, now: datetime | None = None) -> tuple[Q.TimeRange, str]:
    """The default range: since the data started (at least 15 minutes), else the last 24 hours.

    >>> t0 = pd.Timestamp("2026-01-01 09:18", tz="UTC")
    >>> rng, label = auto_range(t0, now=t0 + timedelta(minutes=40))
    >>> rng.seconds, label
    (2640, 'last 44 min (since the data started at 09:18 UTC)')
    >>> auto_range(None)[1]
    'last 24 hours'
    """
    if data_start is None or pd.isna(data_start):
        return Q.TimeRange.last("24h"), RANGE_LABELS["24h"]
    rng = Q.TimeRange.since(data_start.to_pydatetime(), now=now)
    span = (
        f"{rng.seconds / 60:.0f} min"
        if rng.seconds < 3 * 3600
        else (f"{rng.seconds / 3600:.0f} h" if rng.seconds < 3 * 86400 else f"{rng.seconds / 86400:.0f} days")
    )
    day = "%H:%M UTC" if rng.seconds < 86400 else "%Y-%m-%d %H:%M UTC"
    return rng, f"last {span} (since the data started at {data_start.strftime(day)})"


def current() -> Ctx:
    """The context :func:`start` made for this run (pages call this)."""
    ctx = st.session_state.get("dw__ctx")
    if ctx is None:  # a page run without the entry script (should not happen)
        st.error("Open the dashboard through its entry point: `driftwatch dashboard`.")
        st.stop()
    return ctx


def _write_url(params: dict[str, str]) -> None:
    current = {k: st.query_params.get(k) for k in FILTERS if k in st.query_params}
    if current != params:
        for k in FILTERS:
            if k not in params and k in st.query_params:
                del st.query_params[k]
        for k, v in params.items():
            if st.query_params.get(k) != v:
                st.query_params[k] = v
    st.session_state["dw__qp_seen"] = dict(params)


def set_param(key: str, value: str | None) -> None:
    """Record a page-level filter (e.g. the drift page's feature) in state and URL."""
    st.session_state[_k(key)] = value
    if value is None:
        if key in st.query_params:
            del st.query_params[key]
    else:
        st.query_params[key] = value
    seen = dict(st.session_state.get("dw__qp_seen") or {})
    if value is None:
        seen.pop(key, None)
    else:
        seen[key] = value
    st.session_state["dw__qp_seen"] = seen


# Body -----------------------------------------------------------------------------------


def body(ctx: Ctx, render: Callable[[Ctx], None], *, title: str, caption: str = "") -> None:
    """The page's title, then ``render(ctx)`` inside an auto-refreshing fragment."""
    st.title(title)
    if caption:
        st.caption(caption)
    every = ctx.settings.dashboard_refresh_seconds or None

    @st.fragment(run_every=every)
    def _refreshing() -> None:
        # A fragment rerun skips the entry script's login gate and keeps the ctx of the last
        # full run: check the login and the access list again before rendering anything.
        scrub_forged_widget_state()
        if not still_allowed(ctx):
            log.info("dashboard: %s page: login or access changed since the last full run; rerunning the app", ctx.page)
            st.rerun(scope="app")
        # a row that wraps: the button keeps its whole label at any width (a [5, 1] column cut it
        # to "Ref…" at 1,024 px); the caption takes what is left
        head = st.container(horizontal=True, wrap=True, vertical_alignment="center", gap="medium")
        now = datetime.now(UTC)
        scope = ctx.model if ctx.page != "overview" else f"{len(ctx.models)} model(s)"
        extra = []
        if ctx.version:
            extra.append(f"version {ctx.version}")
        if ctx.segment:
            extra.append(f"segment {ctx.segment}")
        head.caption(
            f"**{scope}**{' · ' + ' · '.join(extra) if extra else ''} · {ctx.range_label} · "
            f"last updated **{now:%H:%M:%S} UTC**"
            + (f" (auto-refresh every {ctx.settings.dashboard_refresh_seconds:g} s)" if every else ""),
            width="stretch",
        )
        if head.button("Refresh now", key=f"dw_refresh_{ctx.page}", icon=":material/refresh:", width="content"):
            D.clear()
            st.rerun(scope="fragment")
        try:
            render(ctx)
        except Q.NoDatabase:
            st.info(NO_DATA_HINT)
        except Q.InfluxUnavailable as e:
            st.error(f"**InfluxDB cannot be reached** ({e}). Is it running? `driftwatch stack status` tells.")
        except Q.InfluxError as e:
            st.error(f"InfluxDB refused a query: {e}")

    _refreshing()


def links(ctx: Ctx, targets: list[tuple[str, str]], **override: str | None) -> None:
    """A row of links to other pages that keep the filters (``(page key, label)`` pairs)."""
    row = st.container(horizontal=True, wrap=True, gap="large")
    for key, label in targets:
        path, _title, icon, _url = PAGES[key]
        row.page_link(path, label=label, icon=icon, query_params=ctx.link_params(**override))


def metric_row() -> Any:
    """A row of ``st.metric`` cells that wraps instead of cutting labels.

    Equal columns cut a label longer than its column ("Events / s (latest wi…" and "Worst
    miss…" at 1,024 px); in this row each cell (``.metric(..., width="content")`` or a
    :func:`metric_cell`) is as wide as its label and value, and a cell that does not fit
    moves to the next line.
    """
    return st.container(horizontal=True, wrap=True, gap="medium")


def metric_cell(row: Any) -> Any:
    """A cell of a :func:`metric_row` that holds a metric and a caption under it."""
    return row.container(width="content", gap=None)


def empty(message: str, hint: str = "") -> None:
    """An empty state that says what to do, instead of a blank chart."""
    st.info(f"{message}" + (f"\n\n{hint}" if hint else ""), icon=":material/info:")


# Formatting -----------------------------------------------------------------------------


def fmt_p(p: Any) -> str:
    """A p-value for people: ``< 1e-16`` style for tiny values.

    >>> fmt_p(0.0123), fmt_p(1e-30), fmt_p(float("nan"))
    ('0.0123', '< 1e-16', '—')
    """
    try:
        p = float(p)
    except (TypeError, ValueError):
        return "—"
    if math.isnan(p):
        return "—"
    if p < 1e-16:
        return "< 1e-16"
    return f"{p:.3g}"


def median(values: Any) -> float | None:
    """The median of the numeric values, or None when there is none (no warning).

    >>> median(pd.Series([1.0, None, 3.0])), median(pd.Series([None]))
    (2.0, None)
    """
    s = pd.to_numeric(pd.Series(values), errors="coerce").dropna()
    return float(s.median()) if len(s) else None


def fmt_num(v: Any, spec: str = ".3g") -> str:
    """``v`` formatted by ``spec``, "—" when it is missing; ``spec="percent"`` writes it as
    Streamlit's ``NumberColumn(format="percent")`` does (at most two decimals, no trailing
    zeros), so a column shown as text beside numeric ones reads the same.

    >>> fmt_num(0.02, "percent"), fmt_num(0.0213, "percent"), fmt_num(0.021, "percent"), fmt_num(None, "percent")
    ('2%', '2.13%', '2.1%', '—')
    """
    try:
        f = float(v)
    except (TypeError, ValueError):
        return "—" if v is None else str(v)
    if math.isnan(f):
        return "—"
    if spec == "percent":
        return f"{f * 100:.2f}".rstrip("0").rstrip(".") + "%"
    return format(f, spec)


def count(n: Any, noun: str, plural: str | None = None, spec: str = ",.0f") -> str:
    """``n`` formatted, and ``noun`` agreeing with it (``plural`` when adding an s is wrong).

    >>> count(1, "feature"), count(2500, "event"), count(None, "label"), count(1.0, "query", "queries")
    ('1 feature', '2,500 events', '— labels', '1 query')
    """
    try:
        one = float(n) == 1
    except (TypeError, ValueError):
        one = False
    return f"{fmt_num(n, spec)} {noun if one else (plural or noun + 's')}"


def fmt_time(t: Any) -> str:
    if t is None or (isinstance(t, float) and math.isnan(t)) or pd.isna(t):
        return "—"
    return pd.Timestamp(t).strftime("%Y-%m-%d %H:%M:%S UTC")


TEST_NAMES = {
    "ks": "Kolmogorov-Smirnov",
    "cvm": "Cramér-von Mises",
    "chi2": "chi-squared",
    "fisher": "Fisher exact",
    "mmd": "MMD (permutation)",
    "psi": "PSI",
    "js": "Jensen-Shannon",
    "wasserstein": "Wasserstein",
}


def test_name(detector: Any) -> str:
    d = str(detector or "")
    return TEST_NAMES.get(d.lower(), d or "—")


def fmt_pct(v: Any) -> str:
    """A rate as a percentage with enough digits to tell it from zero.

    >>> fmt_pct(0.002), fmt_pct(0.25), fmt_pct(0.00004), fmt_pct(0.0), fmt_pct(None)
    ('0.20%', '25.0%', '< 0.01%', '0%', '—')
    """
    try:
        f = float(v)
    except (TypeError, ValueError):
        return "—"
    if math.isnan(f):
        return "—"
    if f == 0:
        return "0%"
    if f < 0.0001:
        return "< 0.01%"
    return f"{f:.2%}" if f < 0.01 else f"{f:.1%}"


def _spec(cfg: Any) -> str:
    """A Python format spec for a column's ``NumberColumn`` printf format (``"percent"`` has a
    rule of its own: :func:`fmt_percent_cell`)."""
    fmt = (cfg or {}).get("type_config", {}).get("format") if isinstance(cfg, dict) else None
    if fmt == "percent":
        return "percent"
    if isinstance(fmt, str) and fmt.startswith("%") and fmt[-1] in "dfgeE":
        return ".0f" if fmt == "%d" else fmt[1:]
    return ".4g"


def table(df: pd.DataFrame, column_config: dict[str, Any] | None = None, **kw: Any) -> Any:
    """``st.dataframe`` without the text "None": Streamlit draws every missing cell as
    "None", which reads as a value. Columns with missing cells are shown as text instead,
    formatted as their ``NumberColumn`` says (times as UTC), with "—" where nothing is known.
    """
    out = df.copy()
    cfg = dict(column_config or {})
    for c in out.columns:
        s = out[c]
        if not s.isna().any():
            continue
        old = cfg.get(c)
        label = old.get("label") if isinstance(old, dict) else None
        helptext = old.get("help") if isinstance(old, dict) else None
        if pd.api.types.is_bool_dtype(s) or (s.dropna().map(type).isin([bool]).all() and len(s.dropna())):
            out[c] = s.fillna(False).astype(bool)
            continue
        if pd.api.types.is_datetime64_any_dtype(s):
            out[c] = s.map(lambda v: "—" if pd.isna(v) else pd.Timestamp(v).strftime("%Y-%m-%d %H:%M:%S"))
        elif pd.api.types.is_numeric_dtype(s) or (
            len(s.dropna()) and s.dropna().map(lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)).all()
        ):
            spec = _spec(old)
            out[c] = s.map(lambda v, spec=spec: fmt_num(v, spec))
            cfg[c] = st.column_config.TextColumn(label or c, help=helptext, alignment="right")  # as numbers are
            continue
        else:
            out[c] = s.map(lambda v: "—" if v is None or (isinstance(v, float) and math.isnan(v)) else v)
            continue
        cfg[c] = st.column_config.TextColumn(label or c, help=helptext)
    first = out.columns[0] if len(out.columns) else None
    if first is not None and out[first].dtype == object and not isinstance(cfg.get(first), dict):
        first_label = cfg.get(first) if isinstance(cfg.get(first), str) else str(first)
        # the row names (features, models): wide enough for the longest, which Streamlit's own
        # sizing clips ("bmi_clas")
        longest = int(out[first].astype(str).str.len().max() or 0)
        cfg[first] = st.column_config.TextColumn(first_label, width=min(8 * longest + 28, 320))
    kw.setdefault("hide_index", True)
    kw.setdefault("width", "stretch")
    return st.dataframe(out, column_config=cfg, **kw)


def rule_thresholds(ctx: Ctx, signal: str, **where: str) -> list[tuple[float, str]]:
    """The numeric thresholds of the model's alert rules on ``signal`` (``measurement.field``
    names, e.g. ``drift_summary.share_drifted``) whose ``where`` admits the given tags, as
    (value, label) pairs for a chart's threshold lines."""
    m = monitor_model(ctx.settings.monitors, ctx.model) if ctx.model else None
    out: list[tuple[float, str]] = []
    for r in getattr(m, "alerts", None) or ():
        if r.signal.removeprefix("dw_") != signal or isinstance(r.threshold, (bool, str)):
            continue
        from streams.alerts.rules import tag_matches  # the rules' own matching

        if all(tag_matches(v, r.where[k]) for k, v in where.items() if k in r.where):
            out.append((float(r.threshold), f"alert {r.name}: {r.op} {r.threshold:g}"))
    return out


def delay_unit(seconds: float) -> tuple[float, str]:
    """(divisor, unit) to show a delay of about ``seconds`` in: seconds below two minutes,
    minutes below two hours, else hours (a 5 s label delay is "5 s", not "0.0833 min").

    >>> delay_unit(5), delay_unit(600), delay_unit(3 * 3600)
    ((1.0, 'seconds'), (60.0, 'minutes'), (3600.0, 'hours'))
    """
    if seconds < 120:
        return 1.0, "seconds"
    if seconds < 7200:
        return 60.0, "minutes"
    return 3600.0, "hours"


#: how the stored ``threshold_method`` reads on the page (detectors/thresholds.py)
RULES = {
    "p_value": "p-value",
    "statistic": "statistic vs its threshold",
    "reference_chunks": "reference chunks",
    "effect_size": "effect size",
    "both": "reference chunks + effect band + floor",
    "p_and_effect": "p-value + effect floor",
}


def band_text(row: dict) -> str:
    """``p-value ≥ 0.0012`` / ``statistic ≤ 0.08`` / ``effect 0.02–0.1``: the band the judged value had to stay in."""
    judged = row.get("judged")
    lo, hi = row.get("band_lower"), row.get("band_upper")
    lo = None if lo is None or pd.isna(lo) else float(lo)
    hi = None if hi is None or pd.isna(hi) else float(hi)
    if not isinstance(judged, str) or (lo is None and hi is None):
        return "—"
    name = judged.replace("_", "-")
    if lo is not None and hi is not None:
        return f"{name} {lo:.3g}–{hi:.3g}"
    return f"{name} ≥ {lo:.3g}" if lo is not None else f"{name} ≤ {hi:.3g}"
