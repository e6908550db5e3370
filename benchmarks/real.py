# size: one benchmark script (streams, peers, worker run, report) run as a whole by `driftwatch bench real`
"""``driftwatch bench real``: the real worker on real and realistic labelled streams, next to the peers.

Streams (``benchmarks/real_streams.py``): data sets that ship inside installed
packages — NannyML's car loans, multiclass credit cards, US-census employment
(MA) and California housing; River's Phishing and Image Segment with an
injected drift; River's annotated change-point series (occupancy, run log,
bitcoin, Apple, Brent crude). Nothing is downloaded at run time except NannyML
itself, with pip from PyPI, into a virtualenv the benchmark creates under its
state folder (``--state-dir``, default ``bench-real`` in the project's
``.driftwatch``; kept between runs): NannyML's pins clash with driftwatch's venv.

What runs, in one process tree:

1. **driftwatch** — the local stack (tansu + InfluxDB, ``streams.devstack.localstack``)
   and one real ``driftwatch worker`` subprocess with a monitor per stream in
   the *default* configuration: only ``reference: {first_n: N}``, the window
   size and the features are chosen per stream. Each stream is replayed as the
   SDK's column batches (one window of events per message, key = model id), its
   labels one window later (as a label source would), never more than
   ``--lead`` windows ahead of what the worker has written. Results are read
   back from InfluxDB: per window the data-drift summary, prediction drift,
   CBPE's estimated accuracy, the error-stream detector (``fet_online``) and
   the threshold method the verdicts record. The deployment declares a
   false-alarm budget (``alarm_budget``, ``--budget`` false alarms per 100
   windows per model; the replay clock gives every stream 1,000 windows a day).
2. **alibi-detect** ``TabularDrift`` (KS per numeric feature, chi-square per
   categorical, Bonferroni, p_val 0.05: its defaults) on exactly the same
   reference rows and windows.
3. **NannyML** (subprocess in its venv, ``benchmarks/real_nannyml.py``):
   ``UnivariateDriftCalculator`` with its chunk thresholds and ``CBPE``
   (accuracy), chunk = window, fitted on the same reference rows.
4. **River** ``ADWIN`` and ``PageHinkley`` (defaults) on each labelled
   stream's 0/1 error stream, in event order.

Metrics per stream and detector: false alarms per 100 windows where no change
is known (evaluated windows ending before the first known change after the
reference; every window of a stream with no known change), delay after the
first known change (windows: 0 = the window that contains it; events: from the
change to the close of the first window where an alarm *begins* — flagged, the
window before not: a verdict that stays "drift" from before the change on did
not find it, see :func:`alarm_onsets` — or to the detection for the online
detectors), CBPE's mean absolute error against the realized accuracy of
the same windows (computed here from the labels), and the declared false-alarm
budget's allocation per model (``streams.worker.monitors``' ``budget_plan``) against
the data-drift false alarms spent. ``checks`` holds the
issue's done-when lines as booleans; for the delay line a peer "finds" a change
only when it alarms more often after it than before it, beyond chance (one-sided
Fisher exact test, 5 %): a peer that alarms on most quiet windows "finds" every
change at delay 0 by accident. Progress on stderr, the JSON on stdout.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.real_streams import Stream, load_streams, site_packages
from detectors.performance import CONCEPT_UNSTABLE
from streams.lifetime import die_with_parent, spawn_logged

COMMAND = "driftwatch bench real"
NANNYML_SPEC = ["nannyml==0.13.1", "statsmodels>=0.14", "pandas>=2.2,<3"]
PARTITIONS = 4


class BenchError(RuntimeError):
    """A phase could not run or did not finish; the message says which and why."""


def log(msg: str) -> None:
    print(f"[bench real {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="shorter streams (a few minutes; the test runs this)")
    parser.add_argument("--streams", default="", help="comma-separated stream names (default: all)")
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="NannyML's virtualenv and the run folders live here (the venv is reused; default: "
        "bench-real in DRIFTWATCH_STATE_DIR or the project's .driftwatch)",
    )
    parser.add_argument(
        "--no-nannyml",
        action="store_true",
        help="skip NannyML (its streams and its peer results): no virtualenv, no pip",
    )
    parser.add_argument("--lead", type=int, default=3, help="windows the replay may run ahead of the worker")
    parser.add_argument(
        "--no-label-pace",
        action="store_true",
        help="pace the replay on the windows written only, not also on the label results",
    )
    parser.add_argument(
        "--stall-timeout", type=float, default=120.0, help="give up when the worker writes no window for this long"
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=1.0,
        help="declared false-alarm budget, per 100 windows per verdict family of each model (as alarm_budget per day)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the run folder (worker log, data files)")
    parser.add_argument("--output", type=Path, help="also write the JSON to this file")
    parser.add_argument(
        "--table",
        type=Path,
        metavar="JSON",
        help="print the Markdown table of a saved run (its JSON) and exit; runs nothing",
    )


# ----------------------------------------------------------------------------- NannyML's venv


def default_bench_dir() -> Path:
    """``bench-real`` in the state folder the CLI uses (``DRIFTWATCH_STATE_DIR`` or the project's ``.driftwatch``)."""
    from streams.settings import default_state_dir

    env = os.environ.get("DRIFTWATCH_STATE_DIR")
    return (Path(env) if env else default_state_dir()) / "bench-real"


def ensure_nannyml_venv(state_dir: Path) -> Path:
    """A virtualenv with NannyML under ``state_dir`` (created once, with pip from PyPI)."""
    venv = state_dir / "nannyml-venv"
    marker = venv / ".driftwatch-spec"
    want = " ".join(NANNYML_SPEC)
    py = venv / "bin" / "python"
    if py.exists() and marker.exists() and marker.read_text() == want:
        return venv
    log(f"creating NannyML's virtualenv in {venv} (pip install {want}; ~1-2 min once)")
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    r = subprocess.run(
        [str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *NANNYML_SPEC],
        capture_output=True,
        text=True,
        preexec_fn=die_with_parent(),
    )
    if r.returncode != 0:
        raise BenchError(f"pip install {want} failed in {venv}: {r.stderr.strip()[-1500:]}")
    marker.write_text(want)
    log(f"NannyML's virtualenv ready in {time.perf_counter() - t0:.0f} s")
    return venv


def nannyml_jobs(streams: list[Stream], folder: Path) -> list[dict[str, Any]]:
    """Write each stream as Parquet for the NannyML subprocess; the job list it reads."""
    import pandas as pd

    jobs = []
    for s in streams:
        df = s.features.copy()
        for c in s.categorical:
            df[c] = df[c].astype(object).where(df[c].notna(), None).astype(str)
        if s.task == "classification":
            df["y_pred"] = s.pred_label.astype(str)
            for j, c in enumerate(s.classes):
                df["p_" + c] = s.proba[:, j]
            if s.labelled:
                df["y_true"] = s.label.astype(str)
        path = folder / f"{s.name}.parquet"
        pd.DataFrame(df).to_parquet(path)
        jobs.append(
            {
                "name": s.name,
                "path": str(path),
                "numeric": s.numeric,
                "categorical": s.categorical,
                "classes": s.classes if s.task == "classification" else [],
                "window": s.window,
                "ref_n": s.ref_n,
            }
        )
    return jobs


def start_nannyml(venv: Path, streams: list[Stream], folder: Path) -> tuple[subprocess.Popen, Path, Path]:
    job = folder / "nannyml-job.json"
    out = folder / "nannyml-out.json"
    job.write_text(json.dumps(nannyml_jobs(streams, folder)))
    script = Path(__file__).with_name("real_nannyml.py")
    logp = folder / "nannyml.log"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["NML_DISABLE_USAGE_LOGGING"] = "1"
    proc = spawn_logged([str(venv / "bin" / "python"), str(script), str(job), str(out)], env, logp)
    return proc, out, logp


# ----------------------------------------------------------------------------- the worker


def model_id(s: Stream) -> str:
    return f"real-{s.name}"


def monitor_config(
    streams: list[Stream], tl: dict[str, Timeline] | None = None, budget: float | None = None
) -> dict[str, Any]:
    """One monitor per stream, default configuration apart from reference, window and features.

    ``budget``: false alarms per 100 windows per verdict family, declared as the deployment's
    ``alarm_budget`` (per day, over all models and their alarming families; each model's event rate
    declared from the replay clock, so every model's univariate drift verdict gets ``budget`` per 100
    windows) when this driftwatch has one.
    """
    from streams.worker.monitors import MonitorsConfig

    models = []
    for s in streams:
        feats = [{"name": n, "kind": "numeric"} for n in s.numeric]
        feats += [{"name": n, "kind": "categorical"} for n in s.categorical]
        models.append(
            {
                "model_id": model_id(s),
                "task": s.task,
                "features": feats,
                "window": {"size_events": s.window},
                "reference": s.reference or {"first_n": s.ref_n},
            }
        )
    cfg: dict[str, Any] = {"models": models}
    if budget is not None and tl is not None and "alarm_budget" in MonitorsConfig.model_fields:
        from streams.worker.monitors import ModelMonitor

        # the budget covers every alarming verdict family (drift, quality, prediction, CBPE, ...): declare
        # ``budget`` per 100 windows for each, so the univariate drift family measured here keeps that level
        families = sum(getattr(ModelMonitor.model_validate(m), "families", 1) for m in models)
        cfg["alarm_budget"] = {
            "false_alarms": budget / 100 * WINDOWS_PER_DAY * families,
            "per": "day",
            "event_rates": {model_id(s): tl[s.name].events_per_second for s in streams},
        }
    return cfg


WINDOWS_PER_DAY = 1000
"""Replay clock: every stream closes this many windows per day of event time (86.4 s per window), so a
false-alarm budget per day is the same budget per window for every model."""


class Timeline:
    """Event times of one stream's replay: event ``i`` happened at ``t0 + i * dt``, ending ~10 min ago.

    ``dt`` gives :data:`WINDOWS_PER_DAY` windows a day whatever the window size; the whole replay lies
    within a day before now (label join TTLs are a day by default).
    """

    def __init__(self, s: Stream) -> None:
        self.dt = 86_400.0 / (WINDOWS_PER_DAY * s.window)
        self.t0 = float(int(time.time() - s.n * self.dt - 600))

    @property
    def events_per_second(self) -> float:
        return 1.0 / self.dt

    def times(self, start: int, stop: int) -> np.ndarray:
        return np.round(self.t0 + np.arange(start, stop) * self.dt, 6)

    def index(self, t: float) -> int:
        return int(round((t - self.t0) / self.dt))


def _clean(v: Any) -> Any:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return None
    return v


def inference_message(s: Stream, tl: Timeline, start: int, stop: int) -> bytes:
    import orjson

    mid = model_id(s)
    feats: dict[str, list] = {}
    for c in s.numeric:
        feats[c] = [_clean(float(v)) for v in s.features[c].to_numpy()[start:stop]]
    for c in s.categorical:
        feats[c] = [
            None if v is None or (isinstance(v, float) and v != v) else str(v)
            for v in s.features[c].to_numpy()[start:stop]
        ]
    if s.task == "classification":
        pred: dict[str, Any] = {
            "label": s.pred_label[start:stop].tolist(),
            "probabilities": {c: np.round(s.proba[start:stop, j], 6).tolist() for j, c in enumerate(s.classes)},
        }
    else:
        pred = {"value": [_clean(float(v)) for v in s.pred_value[start:stop]]}
    doc = {
        "schema_version": 1,
        "type": "inference_batch",
        "model_id": mid,
        "model_version": "1",
        "event_id": [f"{s.name}-{i}" for i in range(start, stop)],
        "event_time": tl.times(start, stop).tolist(),
        "features": feats,
        "prediction": pred,
    }
    return orjson.dumps(doc)


def label_message(s: Stream, tl: Timeline, start: int, stop: int, label_time: float) -> bytes:
    import orjson

    return orjson.dumps(
        {
            "schema_version": 1,
            "type": "label_batch",
            "model_id": model_id(s),
            "event_id": [f"{s.name}-{i}" for i in range(start, stop)],
            "label": [str(v) for v in s.label[start:stop]],
            "label_time": [label_time] * (stop - start),
        }
    )


class Influx:
    """InfluxQL reads of the benchmark's database."""

    def __init__(self, settings) -> None:
        import httpx

        self.settings = settings
        from streams.influx.admin import basic_auth

        auth = basic_auth(settings)  # the local InfluxDB runs with auth on
        self.client = httpx.Client(base_url=settings.influx_url, timeout=30.0, auth=auth)

    def close(self) -> None:
        self.client.close()

    def rows(self, q: str) -> list[dict[str, Any]]:
        r = self.client.post("/query", data={"q": q, "db": self.settings.influx_db, "epoch": "ns"})
        if r.status_code != 200:
            raise BenchError(f"InfluxDB query failed ({r.status_code}): {r.text[:300]}")
        out = []
        for res in r.json().get("results", []):
            if "error" in res:
                raise BenchError(f"InfluxDB: {res['error']} ({q})")
            for series in res.get("series") or []:
                tags = series.get("tags") or {}
                cols = series["columns"]
                for v in series.get("values") or []:
                    out.append({**tags, **dict(zip(cols, v))})
        return out

    def windows_written(self) -> dict[str, int]:
        rows = self.rows('SELECT count("n_events") FROM "dw_window" GROUP BY "model"')
        return {r["model"]: int(r["count"]) for r in rows}

    def labelled_windows_written(self) -> dict[str, int]:
        """Windows whose realized accuracy (from joined labels) is in, per model."""
        rows = self.rows(
            'SELECT count("n") FROM "dw_performance" WHERE "metric" = \'accuracy\' AND '
            '"detector" = \'realized\' GROUP BY "model"'
        )
        return {r["model"]: int(r["count"]) for r in rows}


def replay(streams: list[Stream], tl: dict[str, Timeline], settings, influx: Influx, lead: int, stall: float) -> dict:
    """Produce every stream window by window (labels one window later), at most ``lead`` windows ahead."""
    from kafka import KafkaProducer

    producer = KafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        acks=1,
        linger_ms=5,
        batch_size=1 << 20,
        max_request_size=16 << 20,
        client_id="driftwatch-bench-real",
    )
    rounds = max(s.n_windows for s in streams)
    t0 = time.perf_counter()
    msgs = events = 0
    last_progress, last_count, last_log = time.monotonic(), -1, 0.0
    try:
        for r in range(rounds + 1):
            while True:  # wait until the worker is within `lead` windows of this round
                written = influx.windows_written()
                behind = [s for s in streams if min(r, s.n_windows) - written.get(model_id(s), 0) > lead]
                total = sum(written.values())
                if not behind and LABEL_PACE:
                    # the label path too: its results (realized accuracy, error stream, CBPE's calibration) may
                    # lag the windows by at most `lead` windows, as they would on the replay clock's real time
                    # (the first UNJOINED windows' predictions came before any label: never joined)
                    lab = influx.labelled_windows_written()
                    behind = [
                        s
                        for s in streams
                        if s.labelled and min(r, s.n_windows) - UNJOINED - 1 - lab.get(model_id(s), 0) > lead
                    ]
                    total += sum(lab.values())
                if total != last_count:
                    last_count, last_progress = total, time.monotonic()
                if not behind:
                    break
                if time.monotonic() - last_progress > stall:
                    raise BenchError(
                        f"the worker wrote no window for {stall:.0f} s (round {r}/{rounds}, written {written})"
                    )
                time.sleep(0.05)
            for s in streams:
                if r < s.n_windows:
                    a, b = r * s.window, (r + 1) * s.window
                    producer.send(
                        settings.topic_inferences,
                        key=model_id(s).encode(),
                        value=inference_message(s, tl[s.name], a, b),
                    )
                    msgs += 1
                    events += b - a
                if s.labelled and 1 <= r <= s.n_windows:
                    a, b = (r - 1) * s.window, r * s.window
                    label_time = float(tl[s.name].times(min(b + s.window, s.n) - 1, min(b + s.window, s.n))[0])
                    producer.send(
                        settings.topic_labels,
                        key=model_id(s).encode(),
                        value=label_message(s, tl[s.name], a, b, label_time),
                    )
                    msgs += 1
            producer.flush(timeout=60)
            if time.monotonic() - last_log > 15:
                last_log = time.monotonic()
                log(f"replay: round {r}/{rounds}, {events:,} events sent, {last_count} windows written")
    finally:
        producer.close(timeout=10)
    return {"messages": msgs, "events": events, "seconds": round(time.perf_counter() - t0, 1)}


def wait_all_windows(streams: list[Stream], influx: Influx, stall: float) -> None:
    want = {model_id(s): s.n_windows for s in streams}
    last, t_last = -1, time.monotonic()
    while True:
        got = influx.windows_written()
        if all(got.get(m, 0) >= n for m, n in want.items()):
            return
        total = sum(got.values())
        if total != last:
            last, t_last = total, time.monotonic()
        if time.monotonic() - t_last > stall:
            missing = {m: (got.get(m, 0), n) for m, n in want.items() if got.get(m, 0) < n}
            raise BenchError(f"windows missing after {stall:.0f} s without progress: {missing}")
        time.sleep(0.2)


def settle_error_streams(streams: list[Stream], influx: Influx, timeout: float) -> float:
    """After the last window: wait (bounded) until every labelled stream's error-stream detector reports
    ``monitoring`` (or ``off``), so detections of errors buffered during its calibration are read too.

    The worker writes the detector's state with each window and, once it reports idle streams, on a
    timer; without that timer a stream whose calibration outlasted its last window stays "calibrating".
    """
    want = {model_id(s): s.window for s in streams if s.labelled and s.task == "classification"}
    t0 = time.monotonic()
    time.sleep(3.0)  # the last labels' results (written on a timer or at the next window)
    while want and time.monotonic() - t0 < timeout:
        rows = influx.rows(
            'SELECT last("phase") FROM "dw_performance" WHERE "metric" = \'error_stream\' GROUP BY "model"'
        )
        done = {r["model"] for r in rows if r.get("last") in ("monitoring", "off")}
        if set(want) <= done and set(want) <= labels_caught_up(influx, want):
            break
        time.sleep(1.0)
    return round(time.monotonic() - t0, 1)


def labels_caught_up(influx: Influx, window: dict[str, int]) -> set[str]:
    """Models whose last window's realized accuracy counts all of its labels: labels join in order per
    model (one key, one partition), so every earlier label is processed too. Without this wait a worker
    whose label path lags its windows (a loaded machine) is read before its labels' results exist."""
    last = {r["model"]: r["time"] for r in influx.rows('SELECT last("n_events") FROM "dw_window" GROUP BY "model"')}
    rows = influx.rows(
        'SELECT last("n") FROM "dw_performance" WHERE "metric" = \'accuracy\' AND '
        '"detector" = \'realized\' GROUP BY "model"'
    )
    return {
        r["model"]
        for r in rows
        if r["model"] in window and r.get("time") == last.get(r["model"]) and (r.get("last") or 0) >= window[r["model"]]
    }


def read_results(streams: list[Stream], tl: dict[str, Timeline], influx: Influx) -> dict[str, dict[str, Any]]:
    """Per stream: the worker's per-window verdicts, indexed by window number."""
    out: dict[str, dict[str, Any]] = {}
    win = influx.rows('SELECT * FROM "dw_window"')
    summ = influx.rows('SELECT * FROM "dw_drift_summary"')
    pred = influx.rows('SELECT * FROM "dw_prediction" WHERE "feature" = \'__all__\'')
    perf = influx.rows('SELECT * FROM "dw_performance"')
    for s in streams:
        mid = model_id(s)
        by_time: dict[int, int] = {}
        evaluated: dict[int, bool] = {}
        for r in win:
            if r.get("model") != mid:
                continue
            k = tl[s.name].index(float(r["window_start"])) // s.window
            by_time[int(r["time"])] = k
            evaluated[k] = bool(r.get("drift_evaluated"))

        def per_window(rows: list[dict], cond=lambda r: True, mid=mid, by_time=by_time) -> dict[int, dict]:
            d = {}
            for r in rows:
                if r.get("model") == mid and cond(r) and int(r["time"]) in by_time:
                    d[by_time[int(r["time"])]] = r
            return d

        data = per_window(summ, lambda r: r.get("segment") in (None, "", "__all__"))
        preds = per_window(pred)
        cbpe = per_window(perf, lambda r: r.get("metric") == "accuracy" and r.get("detector") == "cbpe")
        realized = per_window(perf, lambda r: r.get("metric") == "accuracy" and r.get("detector") == "realized")
        err = per_window(perf, lambda r: r.get("metric") == "error_stream")
        out[s.name] = {
            "evaluated": evaluated,
            "data": data,
            "prediction": preds,
            "cbpe": cbpe,
            "realized": realized,
            "error_stream": err,
        }
    return out


def run_worker(
    streams: list[Stream], tl: dict[str, Timeline], root: Path, budget: float | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Local stack + one worker; replay; the worker's results per stream, and run facts."""
    import yaml

    from streams.broker.admin import ensure_topics
    from streams.devstack.localstack import LocalStack, StackError, free_port, free_ports, settings_env, terminate
    from streams.influx.admin import ensure_database
    from streams.settings import Settings
    from streams.worker.monitors import load_monitors

    stack = None
    err: Exception | None = None
    for _ in range(3):
        kp, ip = free_ports(2)
        st = LocalStack(root / "stack", kp, ip, start_timeout=30, die_with_parent=True)
        try:
            st.up()
        except StackError as e:
            err = e
            continue
        stack = st
        break
    if stack is None:
        raise BenchError(f"the local stack could not start: {err}")
    facts: dict[str, Any] = {}
    proc = None
    influx = None
    try:
        tag = uuid.uuid4().hex[:8]
        cfg = root / "monitors.yaml"
        cfg.write_text(yaml.safe_dump(monitor_config(streams, tl, budget), sort_keys=False))
        loaded = load_monitors(cfg)
        lines = loaded.budget_plan() if hasattr(loaded, "budget_plan") else None
        facts["budget_plan"] = {
            ln.model_id: {
                "alarms_per_day": round(ln.share_per_day, 4),
                "windows_per_day": ln.windows_per_day,
                "window_level": ln.window_level,
            }
            for ln in lines or []
        }
        settings = Settings(
            kafka_bootstrap=stack.bootstrap,
            kafka_security_protocol="PLAINTEXT",
            **stack.influx_settings(),  # the local InfluxDB runs with auth on
            influx_db=f"bench_real_{tag}",
            topic_inferences=f"real.{tag}.inferences",
            topic_labels=f"real.{tag}.labels",
            topic_deadletter=f"real.{tag}.deadletter",
            topic_alerts=f"real.{tag}.alerts",
            topic_partitions=PARTITIONS,
            consumer_group=f"bench-real-{tag}",
            state_dir=root / "state",
            kafka_port=stack.kafka_port,
            influx_port=stack.influx_port,
            monitors=cfg,
            worker_web_port=free_port(),
            log_level="WARNING",
        )
        ensure_topics(settings, partitions=PARTITIONS)
        ensure_database(settings)
        env = settings_env(settings)
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONPATH"] = os.pathsep.join(
            [str(Path(__file__).resolve().parent.parent), os.environ.get("PYTHONPATH", "")]
        ).rstrip(os.pathsep)
        logp = root / "worker.log"
        proc = spawn_logged([sys.executable, "-m", "streams.cli", "worker"], env, logp)
        facts["worker_log"] = str(logp)
        influx = Influx(settings)
        t0 = time.perf_counter()
        facts["replay"] = replay(streams, tl, settings, influx, BENCH_LEAD, BENCH_STALL)
        if proc.poll() is not None:
            raise BenchError(f"the worker exited with {proc.returncode}: {logp.read_text()[-2000:]}")
        wait_all_windows(streams, influx, BENCH_STALL)
        facts["error_stream_settle_s"] = settle_error_streams(streams, influx, BENCH_SETTLE)
        facts["worker_seconds"] = round(time.perf_counter() - t0, 1)
        results = read_results(streams, tl, influx)
        return results, facts
    finally:
        if influx is not None:
            influx.close()
        if proc is not None:
            terminate(proc.pid, 15.0, proc)
        stack.down()


BENCH_LEAD = 3
LABEL_PACE = True
"""The replay waits for the label path as for the windows (``--no-label-pace``: windows only). Without it, the
replay's compressed clock (86 s of event time per window, replayed in well under a second) turns a one-off
minute in the worker — the error-stream detector's calibration, during which the model's joined rows wait —
into dozens of windows whose CBPE estimate and error-stream verdict used stale label results."""
UNJOINED = 0
"""Windows at the start of each labelled stream whose labels do not join in this replay: none — before a
model's first label the join holds a classifier's first ``performance.calibration_rows`` predictions (CBPE's
calibration rows), and every labelled stream here is a classifier with probabilities."""
BENCH_STALL = 120.0
BENCH_SETTLE = 60.0


# ----------------------------------------------------------------------------- peers


def _codes(s: Stream) -> np.ndarray:
    """Features as a float matrix: numeric as is, categorical as integer codes over the whole stream."""
    cols = [s.features[c].to_numpy(dtype=float) for c in s.numeric]
    for c in s.categorical:
        v = s.features[c].astype(object).where(s.features[c].notna(), "__none__").astype(str).to_numpy()
        _, inv = np.unique(v, return_inverse=True)
        cols.append(inv.astype(float))
    return np.column_stack(cols)


def alibi_tabular(s: Stream) -> dict[str, Any]:
    """alibi-detect's TabularDrift (defaults) on the same reference and windows: verdict per window."""
    from alibi_detect.cd import TabularDrift

    x = _codes(s)
    nn = len(s.numeric)
    cats = {nn + j: None for j in range(len(s.categorical))}
    det = TabularDrift(x[: s.ref_n], p_val=0.05, categories_per_feature=cats or None)
    alarms: dict[int, bool] = {}
    first_p = None
    t0 = time.perf_counter()
    for k in range(s.ref_n // s.window, s.n_windows):
        pr = det.predict(x[k * s.window : (k + 1) * s.window], drift_type="batch", return_p_val=True)
        alarms[k] = bool(pr["data"]["is_drift"])
        if first_p is None:
            first_p = {
                "window": k,
                "p_val": [float(p) for p in pr["data"]["p_val"]],
                "features": s.numeric + s.categorical,
            }
    return {"alarms": alarms, "first_window_p_values": first_p, "seconds": round(time.perf_counter() - t0, 2)}


def river_error_stream(s: Stream) -> dict[str, Any]:
    """River's ADWIN and PageHinkley (defaults) on the 0/1 error stream, event by event: alarm indices."""
    from river.drift import ADWIN, PageHinkley

    e = s.errors()
    out = {}
    for name, factory in (("adwin", ADWIN), ("pagehinkley", PageHinkley)):
        d, hits = factory(), []
        for i, v in enumerate(e.tolist()):
            d.update(v)
            if d.drift_detected:
                hits.append(i)
        out[name] = hits
    return out


# ----------------------------------------------------------------------------- metrics


def outside_reference(s: Stream) -> dict[int, bool]:
    """Per evaluated window: at least half of its values of some numeric feature lie outside the range
    ``[min, max]`` of that feature in the reference.

    Such a window is unlike anything the reference holds, whatever the annotators marked: a monitor that
    compares windows with this reference calls it drift, and no threshold on a reference-anchored
    statistic can keep it quiet without being blind to the same move after a known change. The bench
    reports false alarms inside and outside the reference's range separately (a diagnostic, not the
    issue's line: that counts every quiet window).
    """
    if not s.numeric:
        return {}
    x = s.features[s.numeric].to_numpy(dtype=float)
    ref = x[: s.ref_n]
    lo, hi = np.nanmin(ref, axis=0), np.nanmax(ref, axis=0)
    out = {}
    for k in range(s.ref_n // s.window, s.n_windows):
        w = x[k * s.window : (k + 1) * s.window]
        share = np.mean((w < lo) | (w > hi), axis=0)
        out[k] = bool(np.any(share >= 0.5))
    return out


def windows_summary(s: Stream, alarms: dict[int, bool], outside: dict[int, bool] | None = None) -> dict[str, Any]:
    """False alarms per 100 no-change windows and delay after the first known change, from per-window verdicts.

    ``outside`` (:func:`outside_reference`): also the false alarms among the quiet windows that lie inside
    the reference's range. Windows near a point only some annotators marked
    (:meth:`~benchmarks.real_streams.Stream.disputed_windows`) are not quiet windows.
    """
    first_eval = s.ref_n // s.window
    cp = s.first_change_after_reference()
    out: dict[str, Any] = {
        "windows_evaluated": len(alarms),
        "alarms": int(sum(alarms.values())),
        "alarm_windows": sorted(k for k, v in alarms.items() if v),  # to rescore or audit the lines below
    }
    if s.changes is None:
        out.update(
            {
                "no_change_windows": None,
                "false_alarms": None,
                "false_alarms_per_100_windows": None,
                "delay_windows": None,
                "delay_events": None,
                "note": "no change documented: not scored",
            }
        )
        return out
    disputed = s.disputed_windows()
    quiet = [k for k in alarms if k >= first_eval and (cp is None or (k + 1) * s.window <= cp) and k not in disputed]
    fa = sum(alarms[k] for k in quiet)
    if disputed:
        near = sorted(k for k in disputed if k in alarms)
        out["disputed_windows"] = near  # near a minority's mark: neither quiet nor the known change
        out["alarms_in_disputed_windows"] = int(sum(alarms[k] for k in near))
    out["no_change_windows"] = len(quiet)
    out["false_alarms"] = int(fa)
    out["false_alarms_per_100_windows"] = round(100 * fa / len(quiet), 1) if quiet else None
    if outside:
        inside = [k for k in quiet if not outside.get(k, False)]
        fa_in = sum(alarms[k] for k in inside)
        out["no_change_windows_inside_reference_range"] = len(inside)
        out["false_alarms_inside_reference_range"] = int(fa_in)
        out["false_alarms_per_100_windows_inside_reference_range"] = (
            round(100 * fa_in / len(inside), 1) if inside else None
        )
    if cp is not None:
        k0 = cp // s.window
        hits = alarm_onsets(alarms, k0)
        any_hits = sorted(k for k, v in alarms.items() if v and k >= k0)
        out["change_at_event"] = cp
        out["delay_windows"] = hits[0] - k0 if hits else None
        out["delay_events"] = (hits[0] + 1) * s.window - cp if hits else None
        out["detected"] = bool(hits)
        out["first_alarm_after_change_windows"] = any_hits[0] - k0 if any_hits else None
        out["alarming_since_before_change"] = bool(any_hits) and (not hits or hits[0] > any_hits[0])
        after = [k for k in alarms if k >= k0]
        n_after = sum(alarms[k] for k in after)
        out["alarm_rate_after_change"] = round(n_after / len(after), 3) if after else None
        out["found_change"] = bool(hits) and _more_alarms_after(n_after, len(after), fa, len(quiet))
    return out


def alarm_onsets(alarms: dict[int, bool], start: int) -> list[int]:
    """Windows from ``start`` on where an alarm *begins*: flagged, and the window before it was not
    (a window before the first evaluated one counts as not flagged).

    A window verdict that stays "drift" is one detection, made when it turned: this is how a
    change-point benchmark reads a detector (TCPD scores the change points it reports, not the
    windows it stays in). A detector already alarming when the known change comes and still alarming
    after it — alibi-detect on airlinepassengers_1 since eight windows before it (the passenger
    counts' trend against its fixed reference), NannyML on brent_3 since eleven windows before it
    (the slide into the 2014 fall) — did not find that change at it: its detection was the onset, a
    false alarm among the quiet windows. The delay is counted to the first onset at or after the
    change's window, for every detector alike.

    >>> alarm_onsets({5: True, 6: True, 7: False, 8: True}, 6)
    [8]
    """
    return [k for k in sorted(alarms) if k >= start and alarms[k] and not alarms.get(k - 1, False)]


def _more_alarms_after(a_after: int, n_after: int, a_before: int, n_before: int, level: float = 0.05) -> bool:
    """A detector *finds* a change when it alarms more often after it than before it, beyond chance
    (one-sided Fisher exact test at ``level``). Alarms as frequent before the change as after carry no
    information about it: a detector that flags 95 % of quiet windows "detects" every change at once.
    With no quiet window to compare with, any alarm after the change counts."""
    if n_before == 0:
        return a_after > 0
    from scipy.stats import fisher_exact

    table = [[a_after, n_after - a_after], [a_before, n_before - a_before]]
    return bool(fisher_exact(table, alternative="greater").pvalue < level)


def online_summary(s: Stream, alarm_events: list[int], n_alarms_before: int | None = None) -> dict[str, Any]:
    """Online detectors on the error stream: false alarms before the change (per 100 windows), delay in events."""
    cp = s.first_change_after_reference()
    end_quiet = cp if cp is not None else s.n
    fa = sum(1 for a in alarm_events if a < end_quiet) if n_alarms_before is None else n_alarms_before
    quiet_windows = end_quiet / s.window
    out: dict[str, Any] = {
        "alarms": len(alarm_events),
        "false_alarms": int(fa),
        "quiet_events": int(end_quiet),
        "false_alarms_per_100_windows": round(100 * fa / quiet_windows, 1) if quiet_windows else None,
    }
    if s.changes is None:
        out.update({"false_alarms": None, "false_alarms_per_100_windows": None, "note": "no change documented"})
    if cp is not None:
        after = [a for a in alarm_events if a >= cp]
        out["change_at_event"] = cp
        out["delay_events"] = (after[0] - cp) if after else None
        out["delay_windows"] = ((after[0] // s.window) - cp // s.window) if after else None
        out["detected"] = bool(after)
    return out


def realized_accuracy(s: Stream) -> dict[int, float]:
    e = s.errors()
    return {k: float(1 - e[k * s.window : (k + 1) * s.window].mean()) for k in range(s.n_windows)}


CBPE_NOTE = (
    "NannyML's CBPE is fitted once on the reference (the first reference_first_n rows with their labels) and "
    "never recalibrated. driftwatch's default CBPE calibrates on the model's first performance.calibration_rows "
    "joined labels (the same rows: the label join holds them from the first prediction), tests that calibration "
    "on every later label and recalibrates on the labels since when it stops holding (|z| > 5), with a top-label "
    "map (P(served class right | its calibrated probability)) besides the per-class maps; when the labels show "
    "that no calibration lasts (recalibrations in a row, each new one held back until it holds on twice as many "
    "new labels, or a calibration whose own rows move between chunks) it writes 'not calibrated' with a reason "
    "that starts 'concept unstable' and no value, until one lasts. Its MAE is over the "
    "windows with an estimate (windows of windows_evaluated); NannyML's MAE is over all evaluated windows, "
    "and mae_same_windows_as_driftwatch over driftwatch's. Labels arrive one window late, so no estimator that "
    "learns from labels sees a concept change in the two windows after it. The check compares with both."
)
"""How the two CBPEs differ and what the MAE covers (in the JSON's ``config.cbpe``)."""


def cbpe_summary(
    s: Stream, estimates: dict[int, float], realized: dict[int, float], same_as: dict[int, float] | None = None
) -> dict[str, Any]:
    """MAE of the estimates against realized accuracy over the evaluated windows with an estimate;
    ``mae_before_change`` over those ending before the first known change (a concept drift there is
    what no confidence-based estimate sees); with ``same_as`` (driftwatch's estimates), also the MAE
    over the windows that have one there (driftwatch writes "not calibrated" instead of a number
    where its calibration stopped holding)."""
    ks = sorted(k for k in estimates if k in realized and k >= s.ref_n // s.window)
    if not ks:
        return {"windows": 0, "windows_evaluated": s.n_windows - s.ref_n // s.window, "mae": None}
    errs = np.array([abs(estimates[k] - realized[k]) for k in ks])
    out = {
        "windows": len(ks),
        "windows_evaluated": s.n_windows - s.ref_n // s.window,
        "mae": round(float(errs.mean()), 4),
        "max_abs_error": round(float(errs.max()), 4),
    }
    cp = s.first_change_after_reference()
    if cp is not None:
        before = [e for k, e in zip(ks, errs) if (k + 1) * s.window <= cp]
        out["mae_before_change"] = round(float(np.mean(before)), 4) if before else None
    if same_as is not None:
        same = [e for k, e in zip(ks, errs) if k in same_as]
        out["mae_same_windows_as_driftwatch"] = round(float(np.mean(same)), 4) if same else None
    return out


def _field(row: dict | None, *names: str) -> Any:
    if not row:
        return None
    for n in names:
        if row.get(n) is not None:
            return row[n]
    return None


def stream_report(
    s: Stream,
    tl: Timeline,
    worker: dict[str, Any] | None,
    alibi: dict[str, Any] | None,
    nanny: dict[str, Any] | None,
    river: dict[str, Any] | None,
    budget: dict[str, Any] | None = None,
) -> dict[str, Any]:
    rep: dict[str, Any] = {"stream": s.meta(), "detectors": {}}
    dets = rep["detectors"]
    first_eval = s.ref_n // s.window
    evaluated_ks = range(first_eval, s.n_windows)
    outside = outside_reference(s)
    if outside and s.changes is not None:
        cp = s.first_change_after_reference()
        quiet = [k for k in evaluated_ks if cp is None or (k + 1) * s.window <= cp]
        rep["stream"]["quiet_windows_outside_reference_range"] = sum(outside[k] for k in quiet)
    if worker is not None:
        data = {k: bool(_field(worker["data"].get(k), "drift")) for k in evaluated_ks}
        predd = {k: bool(_field(worker["prediction"].get(k), "drift")) for k in evaluated_ks}
        anyd = {k: data[k] or predd[k] for k in evaluated_ks}
        dets["driftwatch_data_drift"] = windows_summary(s, data, outside)
        dets["driftwatch_data_drift"]["windows_with_result"] = sum(k in worker["data"] for k in evaluated_ks)
        if worker["prediction"]:
            dets["driftwatch_prediction_drift"] = windows_summary(s, predd, outside)
        dets["driftwatch_any_verdict"] = windows_summary(s, anyd, outside)
        methods = sorted(
            {
                str(_field(r, "method", "threshold_method"))
                for r in worker["data"].values()
                if _field(r, "method", "threshold_method") is not None
            }
        )
        if methods:
            dets["driftwatch_data_drift"]["threshold_methods"] = methods
        if budget is not None:  # the allocation (streams.worker.monitors' budget_plan) against the data-drift alarms
            quiet = dets["driftwatch_data_drift"].get("no_change_windows")
            level = budget.get("window_level")
            expected = None if quiet is None or level is None else level * quiet
            spent = dets["driftwatch_data_drift"].get("false_alarms")
            rep["budget"] = {
                **budget,
                "quiet_windows": quiet,
                "expected_false_alarms": None if expected is None else round(expected, 2),
                "false_alarms_spent": spent,
                "within": None if expected is None or spent is None else spent <= math.ceil(expected),
            }
    if alibi is not None:
        dets["alibi_tabular_drift"] = windows_summary(
            s, {k: alibi["alarms"][k] for k in evaluated_ks if k in alibi["alarms"]}, outside
        )
    if nanny is not None and "univariate" in nanny:
        u = nanny["univariate"]
        al = {first_eval + i: bool(a) for i, a in enumerate(u["alert"])}
        dets["nannyml_univariate"] = windows_summary(s, al, outside)
        dets["nannyml_univariate"]["methods"] = u.get("methods")
    if nanny is not None and "error" in nanny:
        rep["nannyml_error"] = nanny["error"]
    if s.labelled and s.task == "classification":
        realized = realized_accuracy(s)
        perf: dict[str, Any] = {
            "realized_accuracy_reference": round(float(np.mean([realized[k] for k in range(first_eval)])), 4)
            if first_eval
            else None,
            "realized_accuracy_after_reference": round(float(np.mean([realized[k] for k in evaluated_ks])), 4),
        }
        if worker is not None:
            est = {
                k: float(v["value"])
                for k, v in worker["cbpe"].items()
                if v.get("value") is not None and np.isfinite(float(v["value"]))
            }
            perf["driftwatch_cbpe"] = cbpe_summary(s, est, realized)
            # [window, estimate (None: not calibrated or missing), realized]: where the error comes from
            perf["driftwatch_cbpe"]["per_window"] = [
                [k, None if k not in est else round(est[k], 4), round(realized[k], 4)] for k in evaluated_ks
            ]
            notes = sorted(
                {
                    str(v.get("note") or v.get("status"))
                    for v in worker["cbpe"].values()
                    if v.get("note") or v.get("status")
                }
            )
            if notes:
                perf["driftwatch_cbpe"]["notes"] = notes[:5]
            perf["driftwatch_cbpe"]["windows_with_result"] = sum(k in worker["cbpe"] for k in evaluated_ks)
            perf["driftwatch_cbpe"]["windows_not_calibrated"] = sum(
                worker["cbpe"][k].get("calibrated") is False for k in evaluated_ks if k in worker["cbpe"]
            )
            perf["driftwatch_cbpe"]["windows_concept_unstable"] = sum(
                str(worker["cbpe"][k].get("reason") or "").startswith(CONCEPT_UNSTABLE)
                for k in evaluated_ks
                if k in worker["cbpe"]
            )
        if nanny is not None and "cbpe" in nanny:
            c = nanny["cbpe"]
            est = {first_eval + i: v for i, v in enumerate(c["estimated_accuracy"]) if v is not None}
            dw_est = {
                k
                for k, v in (worker or {}).get("cbpe", {}).items()
                if v.get("value") is not None and np.isfinite(float(v["value"]))
            }
            perf["nannyml_cbpe"] = cbpe_summary(s, est, realized, {k: 0.0 for k in dw_est} if worker else None)
        rep["performance"] = perf
        if worker is not None:
            # the error-stream detector: detections by the event index of the error that fired
            events = []
            n_before = 0
            cp = s.first_change_after_reference()
            for k in sorted(worker["error_stream"]):
                r = worker["error_stream"][k]
                n_det = int(r.get("n_detections") or 0)
                t = r.get("first_detection_event_time")
                if n_det and t is not None:
                    i = tl.index(float(t))
                    events.append(i)
                    if cp is None or i < cp:
                        n_before += n_det
            dets["driftwatch_error_stream"] = online_summary(s, events, n_before)
            phases = sorted({str(r.get("phase")) for r in worker["error_stream"].values() if r.get("phase")})
            dets["driftwatch_error_stream"]["phases"] = phases
        if river is not None:
            for name, hits in river.items():
                dets[f"river_{name}"] = online_summary(s, hits)
                dets[f"river_{name}"]["first_alarms"] = hits[:5]
    return rep


# ----------------------------------------------------------------------------- checks


def checks(reports: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The issue's done-when lines, per stream and overall (None where a line does not apply)."""
    out: dict[str, Any] = {
        "false_alarms_at_most_2_per_100_windows": {},
        "false_alarms_within_declared_budget": {},
        "delay_no_later_than_slower_peer_and_within_one_window_of_faster": {},
        "cbpe_mae_at_most_nannyml_and_0.03": {},
        "cbpe_mae_at_most_nannyml": {},
        "cbpe_mae_at_most_nannyml_and_0.03_or_concept_unstable": {},
        "error_stream_delay_at_most_adwin_and_no_more_false_alarms": {},
        "diagnostic_false_alarms_at_most_2_per_100_windows_inside_reference_range": {},
    }
    for name, rep in reports.items():
        d = rep["detectors"]
        any_v = d.get("driftwatch_any_verdict", {})
        fa = any_v.get("false_alarms_per_100_windows")
        if fa is not None:
            out["false_alarms_at_most_2_per_100_windows"][name] = fa <= 2.0
        fa_in = any_v.get("false_alarms_per_100_windows_inside_reference_range")
        if fa_in is not None:
            out["diagnostic_false_alarms_at_most_2_per_100_windows_inside_reference_range"][name] = fa_in <= 2.0
        if (rep.get("budget") or {}).get("within") is not None:
            out["false_alarms_within_declared_budget"][name] = rep["budget"]["within"]
        dw = d.get("driftwatch_any_verdict", {}).get("delay_windows")
        found = [
            d[p]["delay_windows"]
            for p in ("alibi_tabular_drift", "nannyml_univariate")
            if d.get(p, {}).get("found_change")
        ]
        if found and "change_at_event" in any_v:
            ok = dw is not None and dw <= max(found) and dw <= min(found) + 1
            out["delay_no_later_than_slower_peer_and_within_one_window_of_faster"][name] = ok
        perf = rep.get("performance", {})
        m_dw = (perf.get("driftwatch_cbpe") or {}).get("mae")
        nm = perf.get("nannyml_cbpe") or {}
        if perf:
            # at most NannyML's over all windows and over the windows driftwatch estimated (CBPE_NOTE)
            le_nm = m_dw is not None and all(
                v is None or m_dw <= v for v in (nm.get("mae"), nm.get("mae_same_windows_as_driftwatch"))
            )
            out["cbpe_mae_at_most_nannyml_and_0.03"][name] = le_nm and m_dw <= 0.03
            out["cbpe_mae_at_most_nannyml"][name] = le_nm
            # or no number at all: every estimated window withheld with the labels' evidence ("concept unstable")
            dwc = perf.get("driftwatch_cbpe") or {}
            declined = m_dw is None and dwc.get("windows_concept_unstable", 0) > 0
            out["cbpe_mae_at_most_nannyml_and_0.03_or_concept_unstable"][name] = (le_nm and m_dw <= 0.03) or declined
        es, ad = d.get("driftwatch_error_stream"), d.get("river_adwin")
        if es is not None and ad is not None:
            fa_ok = (es.get("false_alarms") or 0) <= (ad.get("false_alarms") or 0)
            if "change_at_event" in ad:
                dl_ok = ad.get("delay_events") is None or (
                    es.get("delay_events") is not None and es["delay_events"] <= ad["delay_events"]
                )
            else:
                dl_ok = True
            out["error_stream_delay_at_most_adwin_and_no_more_false_alarms"][name] = fa_ok and dl_ok
    out["all"] = {k: (all(v.values()) if v else None) for k, v in out.items() if isinstance(v, dict)}
    return out


# ----------------------------------------------------------------------------- run


def _fmt(v: Any, unit: str = "") -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:g}{unit}"
    return f"{v}{unit}"


def markdown_table(report: dict[str, Any]) -> str:
    """The README/docs tables of a run: drift verdicts, then estimated performance and the error stream."""
    rows = [
        "| stream | kind | quiet / evaluated windows | false alarms per 100 quiet windows: driftwatch (any verdict) · "
        "data drift · alibi · NannyML | delay after the change, windows: driftwatch · alibi · NannyML | "
        "quiet windows outside the reference's range; false alarms per 100 of the others: driftwatch · "
        "alibi · NannyML |",
        "|---|---|---|---|---|---|",
    ]
    perf = [
        "| stream | CBPE accuracy MAE: driftwatch (windows estimated / evaluated) · NannyML (all windows; "
        "on driftwatch's) | error stream, delay events (false alarms): "
        "driftwatch · ADWIN · PageHinkley |",
        "|---|---|---|",
    ]
    for name, r in report["streams"].items():
        d, st = r["detectors"], r["stream"]

        def g(det: str, key: str, d: dict = d) -> Any:
            return (d.get(det) or {}).get(key)

        quiet = g("driftwatch_any_verdict", "no_change_windows")
        fa = " · ".join(
            _fmt(g(x, "false_alarms_per_100_windows"))
            for x in ("driftwatch_any_verdict", "driftwatch_data_drift", "alibi_tabular_drift", "nannyml_univariate")
        )
        if st["first_change_after_reference"] is None:
            delay = "no known change" if st["known_changes"] is not None else "not annotated"
        else:

            def dl(x: str) -> str:
                v = g(x, "delay_windows")
                if v is None:  # "already on": flagged since before the change, no new onset after it
                    return "already on" if g(x, "alarming_since_before_change") else "missed"
                return str(v) + ("" if g(x, "found_change") in (None, True) else "*")

            delay = " · ".join(dl(x) for x in ("driftwatch_any_verdict", "alibi_tabular_drift", "nannyml_univariate"))
        n_out = st.get("quiet_windows_outside_reference_range")
        inside = (
            "–"
            if n_out is None
            else f"{n_out}; "
            + " · ".join(
                _fmt(g(x, "false_alarms_per_100_windows_inside_reference_range"))
                for x in ("driftwatch_any_verdict", "alibi_tabular_drift", "nannyml_univariate")
            )
        )
        rows.append(
            f"| {name} | {st['kind']} | {_fmt(quiet)} / {g('driftwatch_any_verdict', 'windows_evaluated')} "
            f"| {fa} | {delay} | {inside} |"
        )
        p = r.get("performance")
        if p:
            dwc, nmc = p.get("driftwatch_cbpe") or {}, p.get("nannyml_cbpe") or {}
            cover = f" ({dwc['windows']}/{dwc['windows_evaluated']})" if "windows_evaluated" in dwc else ""
            same = nmc.get("mae_same_windows_as_driftwatch")
            same_txt = f"; {_fmt(same)}" if same is not None and same != nmc.get("mae") else ""
            unstable = dwc.get("windows_concept_unstable") or 0
            withheld = f", concept unstable on {unstable}" if unstable else ""
            mae = f"{_fmt(dwc.get('mae'))}{cover}{withheld} · {_fmt(nmc.get('mae'))}{same_txt}"

            def es(x: str, d: dict = d, st: dict = st) -> str:
                if not d.get(x):
                    return "–"
                if st["known_changes"] is None:
                    return f"{_fmt(g(x, 'alarms'))} alarms"
                if st["first_change_after_reference"] is None:
                    return f"({_fmt(g(x, 'false_alarms'))})"
                v = g(x, "delay_events")
                return f"{'missed' if v is None else v} ({_fmt(g(x, 'false_alarms'))})"

            perf.append(
                f"| {name} | {mae} | {es('driftwatch_error_stream')} · {es('river_adwin')} · "
                f"{es('river_pagehinkley')} |"
            )
    return "\n".join(rows) + "\n\n" + "\n".join(perf) + "\n"


def run(args: argparse.Namespace) -> int:
    global BENCH_LEAD, BENCH_STALL, BENCH_SETTLE, LABEL_PACE
    if args.table is not None:
        print(markdown_table(json.loads(args.table.read_text())))
        return 0
    warnings.filterwarnings("ignore")
    BENCH_LEAD, BENCH_STALL = args.lead, args.stall_timeout
    LABEL_PACE = not args.no_label_pace
    BENCH_SETTLE = 120.0 if args.quick else 600.0  # a bound: the wait ends when the label results are in
    t_start = time.perf_counter()
    state = (args.state_dir or default_bench_dir()).resolve()
    state.mkdir(parents=True, exist_ok=True)
    only = [x.strip() for x in args.streams.split(",") if x.strip()] or None
    venv = None if args.no_nannyml else ensure_nannyml_venv(state)
    streams = load_streams(site_packages(venv) if venv else None, args.quick, only, args.seed)
    if not streams:
        raise BenchError(f"no stream selected (--streams {args.streams!r})")
    log(f"{len(streams)} streams: " + ", ".join(f"{s.name} ({s.n:,} events, windows of {s.window})" for s in streams))
    root = Path(tempfile.mkdtemp(prefix="run-", dir=state))
    nanny_proc = None
    try:
        if venv is not None:
            nanny_proc, nanny_out, nanny_log = start_nannyml(venv, streams, root)
        tl = {s.name: Timeline(s) for s in streams}
        worker, facts = run_worker(streams, tl, root, args.budget)
        (root / "worker-rows.json").write_text(json.dumps(worker, default=_json_default))
        log(f"worker done in {facts['worker_seconds']} s; peers")
        alibi = {s.name: alibi_tabular(s) for s in streams}
        river = {s.name: river_error_stream(s) for s in streams if s.labelled and s.task == "classification"}
        nanny: dict[str, Any] = {}
        if nanny_proc is not None:
            rc = nanny_proc.wait(timeout=1800)
            if rc != 0 or not nanny_out.exists():
                raise BenchError(f"the NannyML subprocess failed ({rc}): {nanny_log.read_text()[-2000:]}")
            nanny = json.loads(nanny_out.read_text())
        plan = facts.pop("budget_plan", {})
        reports = {
            s.name: stream_report(
                s,
                tl[s.name],
                worker.get(s.name),
                alibi.get(s.name),
                nanny.get(s.name),
                river.get(s.name),
                plan.get(model_id(s)),
            )
            for s in streams
        }
        report = {
            "command": COMMAND + (" --quick" if args.quick else ""),
            "git_commit": _git_commit(),
            "config": {
                "quick": args.quick,
                "seed": args.seed,
                "lead_windows": args.lead,
                "label_pace": LABEL_PACE,
                "budget_false_alarms_per_100_windows": args.budget,
                "windows_per_day": WINDOWS_PER_DAY,
                "worker": "driftwatch worker, default monitor config (reference per stream, window, features)",
                "nannyml": nanny.get("nannyml_version"),
                "nannyml_spec": None if args.no_nannyml else NANNYML_SPEC,
                "cbpe": CBPE_NOTE,
            },
            "streams": reports,
            "peer_checks": {
                s.name: {"alibi_first_window_p_values": alibi[s.name]["first_window_p_values"]} for s in streams
            },
            "checks": checks(reports),
            "run": facts,
            "elapsed_s": round(time.perf_counter() - t_start, 1),
        }
    finally:
        if nanny_proc is not None and nanny_proc.poll() is None:
            nanny_proc.kill()
        if not args.keep:
            import shutil

            shutil.rmtree(root, ignore_errors=True)
    text = json.dumps(report, indent=2, default=_json_default)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n")
    print(text)
    return 0


def _git_commit() -> str | None:
    try:
        r = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            cwd=Path(__file__).resolve().parent,
        )
        return r.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


if __name__ == "__main__":  # pragma: no cover
    p = argparse.ArgumentParser(prog=COMMAND)
    add_arguments(p)
    raise SystemExit(run(p.parse_args()))
