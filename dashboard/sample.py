"""Synthetic results for the dashboard's tests, benchmark and a quick look without a worker.

:func:`sample_records` makes the :class:`detectors.records.Record` points a worker
would write for a few models over a stretch of time: windows at a fixed cadence,
per-feature drift tests (one feature of one model starts drifting part-way),
quality rates (one feature breaks), histograms, reference histograms, realized and
estimated performance with label coverage and delay, adversarial scores with
flagged sources, dead letters, alert state changes and webhook deliveries.

:func:`write_records` sends records to InfluxDB's ``/write`` as line protocol (the
v1 API, batches of 5000 points). The p-values and statistics are drawn to be
consistent with each other (a KS statistic is the asymptotic inverse of its
p-value), so the numbers on screen make sense, but they are not real test results.

>>> recs = list(sample_records(models=["m"], n_features=3, windows=2))
>>> {"dw_window", "dw_drift", "dw_quality", "dw_histogram"} <= {r.measurement for r in recs}
True
>>> to_line(Record("dw_x", {"model": "a b"}, {"v": 1, "ok": True}, 5))
'dw_x,model=a\\\\ b ok=true,v=1.0 5'
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime

import httpx
import numpy as np

from dashboard import queries as Q
from detectors import records as R
from detectors.records import Record
from streams.influx.sink import to_line as _sink_to_line

NUMERIC_BINS = 10
CATEGORIES = ("red", "green", "blue", "other")


def feature_names(n: int) -> list[str]:
    """``f_000`` … ; every fifth feature is categorical (``c_…``)."""
    return [f"c_{i:03d}" if i % 5 == 4 else f"f_{i:03d}" for i in range(n)]


def _ks_stat(p: np.ndarray, n: int, m: int) -> np.ndarray:
    """The KS statistic whose asymptotic two-sample p-value is ``p``."""
    en = math.sqrt(n * m / (n + m))
    return np.sqrt(-np.log(np.clip(p, 1e-300, 1.0) / 2.0) / 2.0) / en


def sample_records(
    models: Sequence[str] = ("churn", "fraud"),
    *,
    n_features: int = 8,
    windows: int = 48,
    cadence_s: int = 300,
    end: datetime | None = None,
    drift_model: str | None = None,
    drift_feature: str | None = None,
    drift_from: float = 0.5,
    quality_feature: str | None = None,
    seed: int = 0,
    p_val: float = 0.05,
    versions: Sequence[str] = ("1",),
    histograms: bool = True,
    segments: Sequence[str] = (),
    false_alarms: bool = True,
) -> Iterator[Record]:
    """Records of ``windows`` windows per model, ``cadence_s`` apart, ending at ``end``.

    ``drift_model``/``drift_feature`` (default: the first model, ``f_001``) drift from
    the fraction ``drift_from`` of the windows on; ``quality_feature`` (default
    ``f_002``) of the same model has 30 % missing values from then on. Versions
    take turns by halves of the time span. ``segments`` (e.g. ``country=de``) repeat
    the drifting model's window, drift, quality and summary points with a segment tag.
    ``false_alarms=False`` keeps stationary features' p-values above the threshold
    (tests that need a model to be exactly healthy); by default they are uniform, so a
    stationary model drifts in about ``p_val`` of its windows, as a real one would.
    """
    gen = _records(
        models,
        n_features,
        windows,
        cadence_s,
        end,
        drift_model,
        drift_feature,
        drift_from,
        quality_feature,
        seed,
        p_val,
        versions,
        histograms,
        false_alarms,
    )
    if not segments:
        yield from gen
        return
    seg_model = drift_model if drift_model is not None else models[0]
    segmented = {R.WINDOW, R.DRIFT, R.QUALITY, R.DRIFT_SUMMARY}
    for rec in gen:
        yield rec
        if rec.measurement in segmented and rec.tags.get(R.T_MODEL) == seg_model:
            for sg in segments:
                yield Record(rec.measurement, {**rec.tags, R.T_SEGMENT: sg}, rec.fields, rec.time_ns)


def _records(
    models: Sequence[str],
    n_features: int,
    windows: int,
    cadence_s: int,
    end: datetime | None,
    drift_model: str | None,
    drift_feature: str | None,
    drift_from: float,
    quality_feature: str | None,
    seed: int,
    p_val: float,
    versions: Sequence[str],
    histograms: bool,
    false_alarms: bool,
) -> Iterator[Record]:
    rng = np.random.default_rng(seed)
    end = end or datetime.now(UTC)
    end_ns = int(end.timestamp()) * 1_000_000_000
    cadence_ns = cadence_s * 1_000_000_000
    drift_model = drift_model if drift_model is not None else models[0]
    names = feature_names(n_features)
    drift_feature = drift_feature or names[1 % n_features]
    quality_feature = quality_feature or names[2 % n_features]
    threshold = p_val / n_features  # Bonferroni
    n_ref = 2000
    start_k = int(drift_from * windows)
    times = [end_ns - (windows - 1 - k) * cadence_ns for k in range(windows)]
    # reference-quantile edges of a standard normal: e01..e09 (bins 0 and 9 are open-ended)
    edges = _norm_ppf(np.arange(1, NUMERIC_BINS) / NUMERIC_BINS)
    edge_fields = {f"e{i + 1:02d}": float(e) for i, e in enumerate(edges)}
    cuts = np.concatenate([[-np.inf], edges, [np.inf]])
    ref_shares = np.full(NUMERIC_BINS, 1.0 / NUMERIC_BINS)
    shifted_shares = np.diff(_norm_cdf(cuts - 0.8))
    cat_shares = np.array([0.5, 0.3, 0.15, 0.05])
    is_cat = np.array([f.startswith("c_") for f in names])
    i_drift, i_quality = names.index(drift_feature), names.index(quality_feature)
    importance = np.full(n_features, 0.5 / max(1, n_features - 1))
    importance[i_drift] = 0.5  # the drifting input matters: it ranks first by impact too
    for m in models:
        drifting = m == drift_model
        joined = predictions = 0
        for v in versions:
            yield from (
                Record(
                    R.IMPACT,
                    {R.T_MODEL: m, R.T_VERSION: v, R.T_FEATURE: f, R.T_DETECTOR: "mi"},
                    {"importance": float(w * 0.8), Q.F_NORMALIZED: float(w), "rank": int(r), "n": n_ref},
                    times[0] - cadence_ns,
                )
                for f, w, r in zip(names, importance, (-importance).argsort().argsort() + 1)
            )
        for k, t in enumerate(times):
            v = versions[min(len(versions) - 1, k * len(versions) // windows)]
            base = {R.T_MODEL: m, R.T_VERSION: v}
            start_s = t / 1e9 - cadence_s
            n = int(rng.integers(900, 1100))
            yield Record(
                R.WINDOW,
                base,
                {
                    Q.F_N_EVENTS: n,
                    Q.F_N_INVALID: int(rng.binomial(n, 0.004)),
                    Q.F_DURATION: float(cadence_s),
                    Q.F_EVENTS_PER_S: n / cadence_s,
                    Q.F_WINDOW_START: start_s,
                    "n_features": n_features,
                    Q.F_CLOSED_AT: t / 1e9 + float(rng.uniform(0.5, 3.0)),
                },
                t,
            )
            active = drifting and k >= start_k
            p = rng.uniform(0.0 if false_alarms else 2 * threshold, 1.0, n_features)
            shift = np.zeros(n_features)
            if active:
                p[i_drift] = 10 ** -rng.uniform(8, 20)
                shift[i_drift] = 0.8
            stat = _ks_stat(p, n_ref, n) * np.where(is_cat, 30.0, 1.0)
            drift = p < threshold
            js = np.abs(rng.normal(0.01, 0.004, n_features)) + shift * 0.25
            wass = np.abs(rng.normal(0.02, 0.01, n_features)) + shift
            miss = np.abs(rng.normal(0.002, 0.001, n_features))
            if active:
                miss[i_quality] = 0.3
            oor = np.where(is_cat, 0.0, np.abs(rng.normal(0, 0.001, n_features)))
            unk = np.where(is_cat, np.abs(rng.normal(0, 0.001, n_features)), 0.0)
            rank = (p.argsort().argsort() + 1).tolist()
            if histograms:  # the bins of this window (same for every stationary feature)
                hist = {}
                for cat_ in (False, True):
                    for sh in (False, True):
                        hist[(cat_, sh)] = _hist_fields(
                            cat_, (shifted_shares if sh else ref_shares), n, edge_fields, cat_shares
                        )
                ref_hist = {
                    cat_: _hist_fields(cat_, ref_shares, n_ref, edge_fields, cat_shares) for cat_ in (False, True)
                }
            cols = zip(
                names,
                is_cat.tolist(),
                stat.tolist(),
                p.tolist(),
                drift.tolist(),
                js.tolist(),
                wass.tolist(),
                miss.tolist(),
                oor.tolist(),
                unk.tolist(),
                shift.tolist(),
                rank,
            )
            for f, cat, st_, p_, d_, js_, w_, mi_, oo_, un_, sh_, rk in cols:
                fields = {
                    Q.F_STATISTIC: st_,
                    Q.F_P_VALUE: p_,
                    Q.F_THRESHOLD: threshold,
                    Q.F_DRIFT: int(d_),
                    Q.F_PSI: js_ * 4.0,
                    Q.F_JS: js_,
                    Q.F_N_REF: n_ref,
                    Q.F_N_CUR: n,
                    Q.F_RANK: rk,
                    Q.F_ENGINE: "native",
                    Q.F_WINDOW_START: start_s,
                }
                if not cat:
                    fields[Q.F_WASSERSTEIN] = w_
                yield Record(R.DRIFT, {**base, R.T_FEATURE: f, R.T_DETECTOR: "chi2" if cat else "ks"}, fields, t)
                n_miss, n_oor, n_unk = int(mi_ * n), int(oo_ * n), int(un_ * n)
                yield Record(
                    R.QUALITY,
                    {**base, R.T_FEATURE: f},
                    {
                        "n": n,
                        "n_missing": n_miss,
                        "n_type_error": 0,
                        "n_out_of_range": n_oor,
                        "n_unknown_category": n_unk,
                        "n_null_violation": 0,
                        "missing_rate": mi_,
                        "type_error_rate": 0.0,
                        "out_of_range_rate": oo_,
                        "unknown_category_rate": un_,
                        "null_violation_rate": 0.0,
                        Q.F_WINDOW_START: start_s,
                    },
                    t,
                )
                if histograms:
                    tags = {**base, R.T_FEATURE: f}
                    yield Record(R.HISTOGRAM, tags, hist[(cat, bool(sh_))], t)
                    yield Record(R.REFERENCE_HISTOGRAM, tags, ref_hist[cat], t)
            nd = int(drift.sum())
            yield Record(
                R.DRIFT_SUMMARY,
                {**base, R.T_DETECTOR: Q.SUMMARY_DETECTOR},
                {
                    Q.F_SHARE_DRIFTED: nd / n_features,
                    Q.F_N_DRIFTED: nd,
                    Q.F_N_FEATURES: n_features,
                    "n_skipped": 0,
                    Q.F_CORRECTION: "bonferroni",
                    Q.F_P_VAL: p_val,
                    Q.F_THRESHOLD: threshold,
                    Q.F_DRIFT: int(nd > 0),
                    Q.F_ENGINE: "native",
                    Q.F_TOP_FEATURE: names[int(p.argmin())],
                    Q.F_WINDOW_START: start_s,
                },
                t,
            )
            # predictions: drift of the predicted class, realized (late labels) and estimated accuracy
            p_pred = 10 ** -rng.uniform(6, 12) if active else float(rng.uniform(0.01, 1.0))
            yield Record(
                R.PREDICTION,
                {**base, R.T_FEATURE: "__label__", R.T_DETECTOR: "chi2"},
                {
                    Q.F_STATISTIC: float(_ks_stat(np.array([p_pred]), n_ref, n)[0] * 30),
                    Q.F_P_VALUE: p_pred,
                    Q.F_THRESHOLD: p_val,
                    Q.F_DRIFT: bool(p_pred < p_val),
                    Q.F_N_REF: n_ref,
                    Q.F_N_CUR: n,
                    Q.F_PSI: 0.4 if active else 0.01,
                    Q.F_JS: 0.1 if active else 0.005,
                    Q.F_RANK: 1,
                },
                t,
            )
            acc = 0.91 - (0.12 if active else 0.0) + rng.normal(0, 0.01)
            est = float(acc + rng.normal(0, 0.01))
            yield Record(
                R.PERFORMANCE,
                {**base, R.T_METRIC: "accuracy", R.T_DETECTOR: Q.CBPE},
                {
                    Q.F_VALUE: est,
                    Q.F_ESTIMATED: True,
                    "n": n,
                    "std": 0.01,
                    Q.F_LOWER: est - 0.03,
                    Q.F_UPPER: est + 0.03,
                    "calibrated": True,
                    "calibration_n": n_ref,
                    "calibration_source": "reference file: labelled rows",
                },
                t,
            )
            for ev in ("prediction_drift", "feature_impact", "estimated_performance"):
                yield Record(R.STATUS, {**base, R.T_DETECTOR: ev}, {Q.F_COMPUTED: 1}, t)
            predictions += n
            if k >= 3:  # labels arrive three windows late
                n_lab = int(n * 0.8)
                joined += n_lab
                yield Record(
                    R.PERFORMANCE,
                    {**base, R.T_METRIC: "accuracy", R.T_DETECTOR: Q.REALIZED},
                    {
                        Q.F_VALUE: float(acc),
                        Q.F_ESTIMATED: False,
                        "n": n_lab,
                        Q.F_N_LABELS: n_lab,
                        Q.F_CBPE_VALUE: est,
                        Q.F_ESTIMATION_ERROR: abs(est - float(acc)),
                        Q.F_DELAY_P50: float(rng.normal(3 * cadence_s, 30)),
                        Q.F_DELAY_P95: float(4 * cadence_s),
                    },
                    t,
                )
            yield Record(
                R.PERFORMANCE,
                {**base, R.T_METRIC: Q.LABEL_JOIN, R.T_DETECTOR: "join"},
                {
                    "predictions": predictions,
                    "labels": joined,
                    Q.F_MATCHED: joined,
                    Q.F_EXPIRED: 0,
                    Q.F_PENDING: predictions - joined,
                },
                t,
            )
            burst = active and k % 7 == 0  # scraper-7 sends off-manifold inputs
            out_p = 10 ** -rng.uniform(5, 9) if burst else float(rng.uniform(0.05, 1.0))
            marg_p = float(rng.uniform(0.05, 1.0))
            p_adv = min(1.0, 2 * min(out_p, marg_p))  # Bonferroni over the two source contrasts
            top = "outlier_source" if out_p < marg_p else "low_margin_source"
            fields = {
                Q.F_SCORE: 1.0 - p_adv,
                Q.F_P_VALUE: p_adv,
                Q.F_THRESHOLD: 0.99,
                Q.F_FLAGGED: p_adv < 0.01,
                Q.F_N_EVENTS: n,
                "n_components": 2,
                "top_component": top,
                "outlier_source_p_value": out_p,
                "outlier_source_suspect": "scraper-7" if burst else "client-a",
                "outlier_source_rate": 0.6 if burst else 0.05,
                "outlier_source_rest_rate": 0.04,
                "low_margin_source_p_value": marg_p,
                "low_margin_source_suspect": "client-b",
                # population rates against the reference (the inputs moved: drift raises them)
                "outlier_rate": 0.2 if burst else 0.01,
                "outlier_ref_rate": 0.01,
                "outlier_change": 0.19 if burst else 0.0,
                "outlier_p_value": min(1.0, out_p * 10),
                "low_margin_rate": 0.12 if drifting else 0.05,
                "low_margin_ref_rate": 0.05,
                "low_margin_change": 0.07 if drifting else 0.0,
                "low_margin_p_value": 1e-6 if drifting else marg_p,
            }
            if p_adv < 0.01:
                fields[Q.F_FLAGGED_BY] = top
            yield Record(R.ADVERSARIAL, base, fields, t)
            for j, src in enumerate(("client-a", "client-b", "scraper-7")):
                flagged = src == "scraper-7" and drifting and k % 7 == 0
                yield Record(
                    R.SOURCE,
                    {**base, R.T_SOURCE: src},
                    {
                        Q.F_SOURCE_FLAG: flagged or (src == "scraper-7" and burst),
                        **(
                            {Q.F_FLAGGED_BY: "extraction" if flagged else "outlier_source"}
                            if flagged or (src == "scraper-7" and burst)
                            else {}
                        ),
                        Q.F_EXTRACTION_FLAG: flagged,
                        Q.F_SCORE: 0.9 if flagged else 0.1 + 0.05 * j,
                        "shapiro_w": 0.99,
                        Q.F_THRESHOLD: 0.5,
                        "n_queries": 100 * (k + 1),
                        "n_window": 40,
                    },
                    t,
                )
            if k % 12 == 5:
                yield Record(
                    R.DEADLETTER,
                    {R.T_MODEL: m, R.T_VERSION: v, R.T_REASON: "schema"},
                    {Q.F_COUNT: int(rng.integers(1, 9)), "messages": 1, "partition": 0, "offset": k},
                    t,
                )
        if drifting and start_k < windows:
            yield from _alerts(m, versions[-1], times, start_k, drift_feature, quality_feature, threshold)
    if windows > 20:  # a message too broken to name its model: no model tag
        yield Record(
            R.DEADLETTER,
            {R.T_REASON: "not_json"},
            {Q.F_COUNT: 1, "messages": 1, "partition": 1, "offset": 0},
            times[windows // 2],
        )


def _alerts(
    model: str, version: str, times: list[int], start_k: int, drift_feature: str, quality_feature: str, threshold: float
) -> Iterator[Record]:
    """Alert points as the alerting service writes them: one per window while pending or
    firing, and one when the status changes; plus the webhook deliveries."""
    base = {R.T_MODEL: model, R.T_VERSION: version}
    drift_tags = {**base, Q.F_RULE: "feature_drift", R.T_SEVERITY: "critical", R.T_FEATURE: drift_feature}
    miss_tags = {**base, Q.F_RULE: "missing_values", R.T_SEVERITY: "warning", R.T_FEATURE: quality_feature}
    for k in range(start_k, len(times)):
        status = Q.STATE_PENDING if k == start_k else Q.STATE_FIRING
        yield Record(
            R.ALERT,
            drift_tags,
            {
                Q.F_STATE: status,
                Q.F_FIRING: int(status == Q.STATE_FIRING),
                "consecutive": k - start_k + 1,
                Q.F_MESSAGE: f"{drift_feature} drifts (p < {threshold:.2g})",
                "key": f"{model}/{version}/feature_drift",
                Q.F_SILENCED: False,
                "notified": status == Q.STATE_FIRING,
                Q.F_VALUE: 1e-9,
                Q.F_THRESHOLD: threshold,
            },
            times[k],
        )
        if k - start_k < 4:
            status = Q.STATE_FIRING if k - start_k < 3 else Q.STATE_RESOLVED
            yield Record(
                R.ALERT,
                miss_tags,
                {
                    Q.F_STATE: status,
                    Q.F_FIRING: int(status == Q.STATE_FIRING),
                    "consecutive": 1,
                    Q.F_MESSAGE: f"{quality_feature}: 30% missing",
                    "key": f"{model}/{version}/missing_values",
                    Q.F_SILENCED: False,
                    "notified": True,
                    Q.F_VALUE: 0.3,
                    Q.F_THRESHOLD: 0.05,
                },
                times[k],
            )
    if start_k + 1 < len(times):
        t_fire = times[start_k + 1]
        for endpoint, status, http, err in (("oncall", "delivered", 200, ""), ("slack", "failed", 503, "HTTP 503")):
            yield Record(
                R.DELIVERY,
                {**base, Q.T_ENDPOINT: endpoint, Q.F_RULE: "feature_drift"},
                {
                    Q.F_DELIVERY_STATUS: status,
                    Q.F_ATTEMPTS: 1 if status == "delivered" else 5,
                    Q.F_LAST_ERROR: err,
                    Q.F_HTTP_STATUS: http,
                    "latency_ms": 12.5,
                    Q.F_EVENT: "firing",
                    "idempotency_key": f"k{endpoint}",
                    "alert_key": f"{model}/{version}/feature_drift",
                },
                t_fire + 1_000_000_000,
            )


def _norm_cdf(x: np.ndarray) -> np.ndarray:
    from scipy.special import ndtr

    return ndtr(x)


def _norm_ppf(q: np.ndarray) -> np.ndarray:
    from scipy.special import ndtri

    return ndtri(q)


def _hist_fields(
    categorical: bool, shares: np.ndarray, n: int, edge_fields: dict[str, float], cat_shares: np.ndarray
) -> dict[str, float | int | str]:
    """Histogram fields in the worker's format (:func:`detectors.histograms.histogram_fields`)."""
    if categorical:
        counts = np.round(cat_shares * n).astype(int).tolist()
        out: dict[str, float | int | str] = {f"b{i:02d}": c for i, c in enumerate(counts)}
        out.update({f"l{i:02d}": lab for i, lab in enumerate((*CATEGORIES[:-1], Q.OTHER_LABEL))})
        kind = "categorical"
    else:
        counts = np.round(shares * n).astype(int).tolist()
        out = {f"b{i:02d}": c for i, c in enumerate(counts)}
        out.update(edge_fields)
        kind = "numeric"
    out.update(n=int(sum(counts)), n_bins=len(counts), noised=0, kind=kind)
    return out


# Writing --------------------------------------------------------------------------------


def to_line(rec: Record) -> str:
    """One record as the worker writes it (:func:`streams.influx.sink.to_line`); "" when no field."""
    return _sink_to_line(rec) or ""


def write_records(conn: Q.Conn, recs: Iterable[Record], batch: int = 5000) -> int:
    """Write records to ``conn.db`` over ``/write`` (creating the database if missing), serialized
    exactly as the worker's sink does. Returns the number of points."""
    # credentials as HTTP basic auth (1.x refuses them in a POST form; in the URL they would be logged)
    basic = (conn.username, conn.password or "") if conn.username and not conn.token else None
    client = httpx.Client(base_url=conn.url, timeout=60, auth=basic)
    params = {"db": conn.db, "precision": "ns"}
    headers = {"Content-Type": "text/plain"}
    if conn.token:
        headers["Authorization"] = f"Token {conn.token}"
    n = 0
    buf: list[str] = []
    try:
        if not conn.token:  # 1.x: make sure the database exists (idempotent)
            r = client.post("/query", data={"q": f"CREATE DATABASE {Q.ident(conn.db)}"})
            if r.status_code >= 300:
                raise Q.InfluxError(f"CREATE DATABASE answered {r.status_code}: {r.text[:300]}")

        def flush() -> None:
            r = client.post("/write", params=params, content="\n".join(buf).encode(), headers=headers)
            if r.status_code >= 300:
                raise Q.InfluxError(f"/write answered {r.status_code}: {r.text[:300]}")
            buf.clear()

        for rec in recs:
            line = to_line(rec)
            if not line:
                continue
            buf.append(line)
            n += 1
            if len(buf) >= batch:
                flush()
        if buf:
            flush()
    finally:
        client.close()
    return n
