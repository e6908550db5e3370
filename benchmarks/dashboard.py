"""``driftwatch bench dashboard``: how fast each dashboard page loads at production size.

Fills an InfluxDB database with 7 days of results for 10 models × 50 features at one
window per 5 minutes (2016 windows per model: per window and feature a drift test, a
quality check and a histogram; per window and model the window counts, drift summary,
performance, adversarial score and three sources — about 4.2 million points), then
measures every page, with the query cache off so each load queries InfluxDB:

- ``server_s``: Streamlit's AppTest run of the page (login, filters, every query,
  every chart built) — the time the server spends on one page view (``cpu_s``: the
  dashboard process's CPU seconds in it, InfluxDB's not included; ``first_s``: the first
  view in this process, imports included);
- ``browser.load``: headless Chromium (Debian's, driven by Playwright) opening the
  page's URL until its content is on screen — not DOMContentLoaded: Streamlit builds the
  page from websocket messages afterwards, so the wait is for the app's "running" state
  to end, the page's title, and every chart (Vega canvas) and every dataframe (grid
  canvas) on the page drawn (:data:`dashboard.browser._READY`);
- ``browser.nav``: the same after clicking the page in the sidebar (how users move
  between pages: no reload of Streamlit's JavaScript), and ``nav_browser_busy_s``, the
  seconds the page's main thread was busy meanwhile (drawing, not waiting);
- ``queries_ms``: each query function on its own.

Prints one JSON object (medians over ``--repeat`` runs, after one warm-up). Without
``--influx-url`` it starts a private InfluxDB (the local stack's binaries) in a temporary
folder and stops it afterwards; with ``--keep`` (or ``--state-dir``) its data folder is kept
(default ``$TMPDIR/driftwatch-bench-dashboard``) so a later ``--reuse`` measures again
without the 5-20 minute fill.

    driftwatch bench dashboard --keep                # full size: fill once, keep the data
    driftwatch bench dashboard --reuse               # measure again on the kept data
    driftwatch bench dashboard --models 2 --features 10 --days 1 --repeat 2   # quick look
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

#: where ``--keep``/``--reuse`` keep the private InfluxDB's data (the fill takes 5-20 min)
DEFAULT_STATE_DIR = Path(tempfile.gettempdir()) / "driftwatch-bench-dashboard"

# the same pages as dashboard.ui.PAGES
PAGES = ["overview", "drift", "quality", "performance", "adversarial", "alerts"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", type=int, default=10, help="models (default 10)")
    parser.add_argument("--features", type=int, default=50, help="features per model (default 50)")
    parser.add_argument("--days", type=float, default=7.0, help="days of windows (default 7)")
    parser.add_argument("--cadence", type=int, default=300, help="seconds between windows (default 300)")
    parser.add_argument("--influx-url", default=None, help="use this InfluxDB (default: start a private one)")
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="state folder of the private InfluxDB, kept after the run so --reuse can measure "
        f"again without the fill (default with --keep or --reuse: {DEFAULT_STATE_DIR}; "
        "otherwise a temporary folder, deleted)",
    )
    parser.add_argument("--db", default="driftwatch_bench", help="database to fill (dropped first unless --reuse)")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="measure the data already there (filled by an earlier --keep run) instead of filling again",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="do not drop the database (nor the private InfluxDB's data folder) at the end",
    )
    parser.add_argument("--repeat", type=int, default=3, help="measured runs per page (after a warm-up)")
    parser.add_argument("--no-browser", action="store_true", help="skip the Chromium measurements")
    parser.add_argument("--budget", type=float, default=2.0, help="seconds a page may take (exit 1 when exceeded)")
    parser.add_argument("--screenshots", type=Path, default=None, help="save a screenshot of every page here")
    parser.add_argument("--processes", type=int, default=2, help="processes generating the data (default 2)")


def _log(msg: str) -> None:
    print(f"[bench dashboard] {msg}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _influx(url: str | None, state_dir: Path | None = None) -> Iterator[str]:
    """The InfluxDB to use: ``url``, or a private local stack in ``state_dir`` (kept) or a temp folder."""
    if url:
        yield url.rstrip("/")
        return
    from streams.devstack.localstack import LocalStack, free_ports

    with contextlib.ExitStack() as es:
        if state_dir is None:
            folder = Path(es.enter_context(tempfile.TemporaryDirectory(prefix="dw-bench-dash-")))
        else:
            folder = Path(state_dir)
            folder.mkdir(parents=True, exist_ok=True)
            _log(f"private InfluxDB data in {folder} (kept)")
        k, i = free_ports(2)
        stack = LocalStack(folder, k, i, start_timeout=120, die_with_parent=True)
        stack.up()
        # its InfluxDB runs with auth on: this process and the dashboard it serves use the admin file
        os.environ.update({k: v for k, v in stack.influx_env().items() if k.startswith("DRIFTWATCH_INFLUX_")})
        os.environ.pop("DRIFTWATCH_INFLUX_PASSWORD", None)
        try:
            yield stack.influx_url
        finally:
            stack.down()


def _auth() -> tuple[str, str] | None:
    """HTTP basic auth for InfluxDB from the ``DRIFTWATCH_INFLUX_*`` environment (None without a user)."""
    from streams.influx.admin import basic_auth
    from streams.settings import Settings

    return basic_auth(Settings())


def model_names(n: int) -> list[str]:
    return [f"model_{i:02d}" for i in range(n)]


def _model_batches(job: tuple[int, str, str, int, int, int, float]) -> list[bytes]:
    """Line-protocol batches (10k lines) of one model's week (runs in a worker process)."""
    from dashboard import sample

    seed, model, first_model, features, windows, cadence, end_s = job
    recs = sample.sample_records(
        [model],
        n_features=features,
        windows=windows,
        cadence_s=cadence,
        end=datetime.fromtimestamp(end_s, UTC),
        seed=seed,
        drift_model=first_model,
        drift_feature="f_001",
        quality_feature="f_002",
        drift_from=0.6,
    )
    out, buf = [], []
    for rec in recs:
        line = sample.to_line(rec)
        if line:
            buf.append(line)
        if len(buf) >= 10_000:
            out.append("\n".join(buf).encode())
            buf = []
    if buf:
        out.append("\n".join(buf).encode())
    return out


def populate(
    url: str, db: str, *, models: int, features: int, days: float, cadence: int, processes: int = 2
) -> dict[str, Any]:
    """Write the synthetic week (models generated in ``processes`` processes); points, seconds, points/s."""
    import multiprocessing

    from dashboard.queries import ident
    from streams.lifetime import exit_with

    client = httpx.Client(base_url=url, timeout=120, auth=_auth())
    client.post("/query", data={"q": f"DROP DATABASE {ident(db)}"})
    client.post("/query", data={"q": f"CREATE DATABASE {ident(db)}"})
    windows = int(days * 86400 / cadence)
    end_s = datetime.now(UTC).timestamp()
    names = model_names(models)
    jobs = [(i, m, names[0], features, windows, cadence, end_s) for i, m in enumerate(names)]
    batches: queue.Queue[bytes | None] = queue.Queue(maxsize=16)
    errors: list[str] = []

    def writer() -> None:  # HTTP in a thread, overlapping with generation
        while (body := batches.get()) is not None:
            r = client.post("/write", params={"db": db, "precision": "ns"}, content=body)
            if r.status_code >= 300:
                errors.append(f"/write {r.status_code}: {r.text[:300]}")

    t0 = time.perf_counter()
    n = 0
    # the pool forks before the writer thread starts (no thread is copied into the children)
    # the generators end with this process, however it ends (streams.lifetime)
    with multiprocessing.get_context("fork").Pool(max(1, processes), exit_with, (os.getpid(),)) as pool:
        th = threading.Thread(target=writer, daemon=True)
        th.start()
        for model, out in zip(names, pool.imap(_model_batches, jobs)):
            for body in out:
                batches.put(body)
                n += body.count(b"\n") + 1
            _log(f"{model}: {n:,} points so far ({time.perf_counter() - t0:.0f} s)")
            if errors:
                break
    batches.put(None)
    th.join()
    if errors:
        raise RuntimeError(errors[0])
    dt = time.perf_counter() - t0
    return {"points": n, "windows_per_model": windows, "seconds": round(dt, 1), "points_per_s": round(n / dt)}


def _has_data(url: str, db: str, models: int) -> bool:
    try:
        r = httpx.post(
            f"{url}/query", data={"db": db, "q": 'SHOW TAG VALUES FROM "dw_window" WITH KEY = "model"'}, auth=_auth()
        )
        series = r.json()["results"][0].get("series", [])
        return bool(series) and len(series[0]["values"]) >= models
    except (httpx.HTTPError, KeyError, ValueError):
        return False


def _median(xs: list[float]) -> float:
    return round(statistics.median(xs), 3) if xs else float("nan")


def measure_queries(url: str, db: str, model: str, repeat: int) -> dict[str, float]:
    from dashboard import queries as Q

    auth = _auth()
    conn = Q.Conn(url, db, *(auth or ()))
    rng = Q.TimeRange.last("7d")
    sc = Q.Scope(rng, model=model)
    top = tuple(Q.heatmap_rows(Q.drift_latest(conn, sc), Q.drift_counts(conn, sc))[: Q.HEATMAP_TOP])
    calls = {
        "models": (Q.models, (conn,)),
        "overview": (Q.overview, (conn, rng)),
        "throughput": (Q.throughput, (conn, Q.Scope(rng))),
        "drift_latest": (Q.drift_latest, (conn, sc)),
        "drift_counts": (Q.drift_counts, (conn, sc)),
        "drift_heatmap_top": (Q.drift_heatmap, (conn, sc, top)),  # what the page draws
        "drift_heatmap_all": (Q.drift_heatmap, (conn, sc)),  # behind the page's "All N features" expander
        "drift_summary_series": (Q.drift_summary_series, (conn, sc)),
        "drift_feature_series": (Q.drift_feature_series, (conn, sc, "f_001")),
        "drift_feature_windows": (Q.drift_feature_windows, (conn, sc, "f_001")),
        "histogram": (Q.histogram, (conn, sc, "f_001")),
        "quality_series": (Q.quality_series, (conn, sc, ("missing_rate",))),  # the page asks for one rate
        "quality_latest": (Q.quality_latest, (conn, sc)),
        "deadletters": (Q.deadletters, (conn, sc)),
        "performance_series": (Q.performance_series, (conn, sc)),
        "adversarial_series": (Q.adversarial_series, (conn, sc)),
        "sources": (Q.sources, (conn, sc)),
        "alert_points": (Q.alert_points, (conn, sc)),
        "deliveries": (Q.deliveries, (conn, sc)),
    }
    out = {}
    for name, (fn, a) in calls.items():
        fn(*a)  # warm-up
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            fn(*a)
            times.append(time.perf_counter() - t)
        out[name] = round(statistics.median(times) * 1000, 1)
    return out


def measure_apptest(model: str, repeat: int) -> tuple[dict[str, Any], dict[str, int]]:
    """Median AppTest run time per page, and how many charts each page drew."""
    from streamlit.testing.v1 import AppTest

    import dashboard

    app = str(Path(dashboard.__file__).with_name("app.py"))
    times: dict[str, list[float]] = {p: [] for p in PAGES}
    cpu: dict[str, list[float]] = {p: [] for p in PAGES}
    first: dict[str, float] = {}
    charts: dict[str, int] = {}
    for r in range(repeat + 1):
        at = AppTest.from_file(app, default_timeout=120)
        at.query_params.update({"model": model, "range": "7d"})
        if r > 0:
            # AppTest scans every installed package for Streamlit components once per instance
            # (~0.5 s here), in its first run; the server does that once, when it starts. An
            # untimed run keeps it out of the first page's time (it made the Overview look 2-3x
            # dearer than it is). Run 0 stays the process's cold first view ("first_s").
            at.run()
        for page in PAGES:
            if page != "overview":
                at.switch_page(f"views/{page}.py")
            t, c = time.perf_counter(), time.process_time()
            at.run()
            dt, dc = time.perf_counter() - t, time.process_time() - c
            if at.exception:
                raise RuntimeError(f"{page}: {at.exception[0].value}")
            charts[page] = len(at.get("vega_lite_chart"))
            if r == 0:
                first[page] = round(dt, 3)
            else:
                times[page].append(dt)
                cpu[page].append(dc)
    return {
        p: {
            "median_s": _median(times[p]),
            "max_s": round(max(times[p]), 3) if times[p] else None,
            "cpu_s": _median(cpu[p]),
            "first_s": first[p],
        }
        for p in PAGES
    }, charts


def measure_browser(
    url: str, db: str, model: str, repeat: int, charts: dict[str, int], screenshots: Path | None
) -> dict[str, Any]:
    from dashboard import browser
    from dashboard.config import PAGES as UI_PAGES
    from streams.devstack.localstack import free_port

    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("DRIFTWATCH_") or k in ("DRIFTWATCH_INFLUX_USERNAME", "DRIFTWATCH_INFLUX_PASSWORD_FILE")
    }
    env.update(
        DRIFTWATCH_INFLUX_URL=url,
        DRIFTWATCH_INFLUX_DB=db,
        DRIFTWATCH_DASHBOARD_CACHE_SECONDS="0",
        DRIFTWATCH_DASHBOARD_REFRESH_SECONDS="0",
        DRIFTWATCH_DASHBOARD_AUTH="none",
    )
    load: dict[str, list[float]] = {p: [] for p in PAGES}
    nav: dict[str, list[float]] = {p: [] for p in PAGES}
    nav_cpu: dict[str, list[float]] = {p: [] for p in PAGES}
    first_visit = None
    with (
        tempfile.TemporaryDirectory(prefix="dw-bench-dash-log-") as tmp,
        browser.serve_dashboard(env, free_port(), Path(tmp) / "dashboard.log") as base,
        browser.chromium() as page,
    ):
        q = f"?model={model}&range=7d"
        cdp = page.context.new_cdp_session(page)  # main-thread busy time of the page (Chrome's TaskDuration)
        cdp.send("Performance.enable")

        def busy() -> float:
            return next(
                m["value"] for m in cdp.send("Performance.getMetrics")["metrics"] if m["name"] == "TaskDuration"
            )

        for r in range(repeat + 1):
            for p in PAGES:
                title = UI_PAGES[p][1]
                t = time.perf_counter()
                page.goto(browser.page_url(base, p, q))
                browser.wait_page(page, title, charts.get(p, 0))
                dt = time.perf_counter() - t
                browser.check_no_exception(page, p)
                if first_visit is None:
                    first_visit = round(dt, 3)
                elif r > 0:
                    load[p].append(dt)
                if r == 0 and screenshots is not None:
                    browser.screenshot(page, screenshots / f"{p}.png")
            # in-app navigation through the sidebar, starting from the last page
            for p in PAGES:
                title = UI_PAGES[p][1]
                t, b0 = time.perf_counter(), busy()
                browser.click_nav(page, title)
                browser.wait_page(page, title, charts.get(p, 0))
                dt, db = time.perf_counter() - t, busy() - b0
                browser.check_no_exception(page, p)
                if r > 0:
                    nav[p].append(dt)
                    nav_cpu[p].append(db)
    return {
        "first_visit_s": first_visit,
        "load": {p: _median(v) for p, v in load.items()},
        "load_max": {p: round(max(v), 3) for p, v in load.items() if v},
        "nav": {p: _median(v) for p, v in nav.items()},
        "nav_browser_busy_s": {p: _median(v) for p, v in nav_cpu.items()},
        "nav_max": {p: round(max(v), 3) for p, v in nav.items() if v},
    }


def run(args: argparse.Namespace) -> int:
    # every page view below is a cache miss: the numbers are InfluxDB + Streamlit, not the cache
    os.environ["DRIFTWATCH_DASHBOARD_CACHE_SECONDS"] = "0"
    os.environ["DRIFTWATCH_DASHBOARD_REFRESH_SECONDS"] = "0"
    os.environ["DRIFTWATCH_DASHBOARD_AUTH"] = "none"
    os.environ.pop("DRIFTWATCH_DASHBOARD_ACCESS", None)
    model = model_names(args.models)[0]
    result: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "load_avg_start": [round(x, 2) for x in os.getloadavg()]},
        "data": {
            "models": args.models,
            "features": args.features,
            "days": args.days,
            "window_seconds": args.cadence,
            "range_shown": "7d",
            "model_shown": model,
        },
    }
    state_dir = args.state_dir
    if state_dir is None and args.influx_url is None and (args.keep or args.reuse):
        state_dir = DEFAULT_STATE_DIR
    for k in (
        "DRIFTWATCH_INFLUX_USERNAME",
        "DRIFTWATCH_INFLUX_PASSWORD",
        "DRIFTWATCH_INFLUX_PASSWORD_FILE",
        "DRIFTWATCH_INFLUX_TOKEN",
    ):
        os.environ.pop(k, None)  # a private stack sets its own (see _influx)
    with _influx(args.influx_url, state_dir) as url:
        os.environ["DRIFTWATCH_INFLUX_URL"] = url
        os.environ["DRIFTWATCH_INFLUX_DB"] = args.db
        if args.reuse and _has_data(url, args.db, args.models):
            _log(f"reusing database {args.db}")
            result["populate"] = {"reused": True}
        else:
            _log(f"writing {args.days:g} days x {args.models} models x {args.features} features to {args.db}")
            result["populate"] = populate(
                url,
                args.db,
                models=args.models,
                features=args.features,
                days=args.days,
                cadence=args.cadence,
                processes=args.processes,
            )
        try:
            _log("queries")
            result["queries_ms"] = measure_queries(url, args.db, model, args.repeat)
            _log("AppTest page runs")
            server, charts = measure_apptest(model, args.repeat)
            result["server_s"] = server
            result["charts"] = charts
            if not args.no_browser:
                _log("Chromium page loads")
                result["browser"] = measure_browser(url, args.db, model, args.repeat, charts, args.screenshots)
        finally:
            if not (args.keep or args.reuse):  # a reused database is kept for the next run too
                with contextlib.suppress(httpx.HTTPError):
                    httpx.post(f"{url}/query", data={"q": f'DROP DATABASE "{args.db}"'}, timeout=60, auth=_auth())
    worst = max(v["median_s"] for v in result["server_s"].values())
    if "browser" in result:
        worst = max(worst, *result["browser"]["load"].values(), *result["browser"]["nav"].values())
    result["machine"]["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    result["budget_s"] = args.budget
    result["worst_page_s"] = round(worst, 3)
    result["ok"] = worst < args.budget
    print(json.dumps(result, indent=2))
    return 0 if result["ok"] else 1
