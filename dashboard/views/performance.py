"""Concept drift and performance: realized performance once labels arrive, estimated
performance beside it, label coverage and delay, and prediction drift."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import charts, ui
from dashboard import data as D
from dashboard import queries as Q
from detectors.performance import CONCEPT_UNSTABLE

#: metrics shown as percentages (the others — log_loss, mae, rmse, bias — as numbers)
PERCENT_METRICS = {"accuracy", "precision", "recall", "f1"}
OUTPUT_NAMES = {"__label__": "predicted class", "__value__": "predicted value"}


def _fmt(metric: str) -> str:
    return ".1%" if metric in PERCENT_METRICS else ".4g"


def perf_title(metric: str, kinds: pd.Series, band: bool = False) -> str:
    """A metric chart's title that names only the lines it draws (no "vs estimated" without an
    estimate: CBPE needs class probabilities, so a regression has realized values only)."""
    have = set(kinds.dropna().astype(str))
    real = any(k.startswith("realized") for k in have)
    est = any(k.startswith("estimated") for k in have)
    if real and est:
        return f"{metric}: realized (labels) vs estimated" + (" (band: ± 3 std)" if band else "")
    return f"{metric}: {'realized (labels)' if real else 'estimated (no labels yet)' if est else ''}".rstrip(": ")


def _latest_metrics(ctx: ui.Ctx, metrics: list[str], latest: pd.DataFrame) -> None:
    if not len(latest) or "metric" not in latest:
        return
    latest = latest.sort_values("time", ascending=False)
    # CBPE's newest point says "not calibrated" (on accuracy only): older estimates of the other metrics are
    # from a calibration that no longer stands, so no tile shows them
    cbpe_acc = latest[(Q.col(latest, "detector", "").astype(str) == Q.CBPE) & (latest["metric"] == "accuracy")]
    withheld = bool(len(cbpe_acc)) and (
        cbpe_acc.iloc[0].get("status") == "not calibrated" or cbpe_acc.iloc[0].get("calibrated") is False
    )
    row = ui.metric_row()
    for m in metrics[:4]:
        rows = latest[latest["metric"] == m]
        det = Q.col(rows, "detector", "").astype(str)
        real, est = rows[det == Q.REALIZED], rows[det == Q.CBPE]
        rv = real.iloc[0].get(Q.F_VALUE) if len(real) else None
        ev = est.iloc[0].get(Q.F_VALUE) if len(est) and not withheld else None
        when = ui.fmt_time(real.iloc[0].get("time")) if len(real) else "no labels yet"
        estimated = "estimate: not calibrated" if withheld else None
        row.metric(
            f"{m} (realized)",
            ui.fmt_num(rv, _fmt(m)),
            width="content",
            delta=(f"estimated {ui.fmt_num(ev, _fmt(m))}" if ev is not None else estimated),
            delta_color="off",
            delta_arrow="off",
            help=f"latest labelled window: {when}",
        )


EVALUATORS = {
    "prediction_drift": "Prediction drift",
    "feature_impact": "Feature impact",
    "estimated_performance": "Estimated performance (CBPE)",
}


def _not_computed(status: pd.DataFrame, evaluator: str) -> str | None:
    """Why the worker's latest window did not compute ``evaluator`` (None: it did, or no status yet)."""
    if not len(status) or "detector" not in status:
        return None
    rows = status[Q.col(status, "detector", "").astype(str) == evaluator]
    if not len(rows) or pd.to_numeric(rows.iloc[0].get(Q.F_COMPUTED), errors="coerce") == 1:
        return None
    reason = rows.iloc[0].get(Q.F_REASON)
    return str(reason) if isinstance(reason, str) and reason else "no reason given"


def _cbpe_state(ctx: ui.Ctx, latest: pd.DataFrame, status: pd.DataFrame) -> None:
    """Say plainly when the estimate is not calibrated yet (and why), or what it is calibrated on."""
    if not len(latest) or "metric" not in latest:
        reason = _not_computed(status, "estimated_performance")
        if reason:
            st.info(f"**Estimated performance: {reason}.**")
        return
    det = Q.col(latest, "detector", "").astype(str)
    rows = latest[(det == Q.CBPE) & (Q.col(latest, "metric", "").astype(str) == "accuracy")]
    if not len(rows):
        reason = _not_computed(status, "estimated_performance")
        if reason:
            st.info(f"**Estimated performance not shown: {reason}.**")
        return
    row = rows.sort_values("time", ascending=False).iloc[0]
    if row.get("status") == "not calibrated" or row.get("calibrated") is False:
        reason = str(row.get(Q.F_REASON) or "no labelled reference rows yet")
        unstable = reason.startswith(CONCEPT_UNSTABLE)
        head = f"not calibrated: {CONCEPT_UNSTABLE}" if unstable else "not calibrated"
        why = (
            "the joined labels show that no calibration lasts on this model — the outcome given the inputs "
            "keeps changing, so the model's probabilities say nothing about its accuracy"
            if unstable
            else "an uncalibrated model's own confidence is not an estimate of its accuracy"
        )
        st.warning(
            f"**Estimated performance: {head}** (latest window {ui.fmt_time(row.get('time'))}) — "
            f"{reason.removeprefix(CONCEPT_UNSTABLE + ': ')}. No estimate is shown until it is: {why}."
        )
    elif isinstance(row.get("calibration_source"), str):
        st.caption(
            f"Estimated performance calibrated on {ui.fmt_num(row.get('calibration_n'), ',.0f')} labelled "
            f"rows ({row.get('calibration_source')}); band = estimate ± 3 standard deviations of the "
            "accuracy a calibrated model would realize on the window, widened by the calibration's own "
            "sampling error (fewer labelled rows, a wider band)."
        )


def _estimation_error(perf: pd.DataFrame) -> None:
    """|estimate − realized| on the labelled rows, per bucket."""
    if Q.F_ESTIMATION_ERROR not in perf:
        return
    d = perf[(Q.col(perf, "detector", "").astype(str) == Q.REALIZED) & (perf["metric"] == "accuracy")]
    d = d.dropna(subset=[Q.F_ESTIMATION_ERROR])
    if not len(d):
        return
    mean_err = float(pd.to_numeric(d[Q.F_ESTIMATION_ERROR], errors="coerce").mean())
    st.altair_chart(
        charts.lines(
            d,
            Q.F_ESTIMATION_ERROR,
            fmt=".1%",
            y_title="|est. − real.|",
            title=f"Estimation error on the labelled rows (mean {mean_err:.1%})",
        ),
        width="stretch",
    )
    st.caption(
        "For the rows whose labels were joined in each window: CBPE's estimate of those same rows "
        "against their realized accuracy. A persistent gap means the calibration no longer holds "
        "(concept drift, or a shift the reference never showed)."
    )


ERROR_STREAM = "error_stream"  # dw_performance metric of the error-stream detector (streams/worker/labels.py)
FET = "fet_online"
PHASES = {
    "reference": "collecting its reference (the errors of the first joined labels)",
    "calibrating": "calibrating its thresholds",
    "off": "off",
}


def _error_stream_query(conn, scope) -> pd.DataFrame:
    """The error-stream detector's points (newest first): drift, statistic vs threshold, error rates."""
    w = scope.where(f"{Q.ident('metric')} = {Q.lit(ERROR_STREAM)}", f"{Q.ident('detector')} = {Q.lit(FET)}")
    return Q.query_df(conn, f"SELECT * FROM {Q.ident('dw_performance')}{w} ORDER BY time DESC LIMIT 500")


_error_stream = D._c(_error_stream_query)


def _error_stream_section(ctx: ui.Ctx, es: pd.DataFrame) -> None:
    st.subheader("Concept drift on the error stream")
    if not len(es):
        ui.empty(
            "No error-stream detection yet.",
            "Once labels are joined, the worker tests each joined label's error (wrong class, or a large "
            "regression error) for a rise in the error rate, event by event (`labels.online` in the monitor "
            "config); its reference is the errors of the model's first joined labels.",
        )
        return
    last = es.iloc[0]
    phase = str(last.get("phase", ""))
    if phase != "monitoring":
        note = last.get("note")
        st.markdown(
            f"The detector is {PHASES.get(phase, phase)}: {ui.fmt_num(last.get('n_ref'), ',.0f')} labelled "
            f"errors in its reference so far." + (f" {note}" if isinstance(note, str) and note else "")
        )
    else:
        st.markdown(
            f"Latest window ({ui.fmt_time(last.get('time'))}): **{'drift' if last.get(Q.F_DRIFT) else 'no drift'}**; "
            f"error rate {ui.fmt_num(last.get('error_rate'), '.1%')} over {ui.count(last.get('n'), 'joined label')} "
            f"vs {ui.fmt_num(last.get('reference_error_rate'), '.1%')} in the reference of "
            f"{ui.fmt_num(last.get('n_ref'), ',.0f')}; {ui.count(last.get('t'), 'label')} since the last "
            f"detection; expected run time {ui.count(last.get('ert'), 'label')} between false alarms."
        )
    hits = es[pd.to_numeric(Q.col(es, Q.F_DRIFT), errors="coerce").fillna(0) > 0]
    if len(hits):
        first = pd.to_numeric(Q.col(hits, "first_detection_time"), errors="coerce")
        table = pd.DataFrame(
            {
                "window end": hits["time"],
                "first detection (label time)": pd.to_datetime(first, unit="s", utc=True),
                "detections": Q.col(hits, "n_detections"),
                "statistic (1 - p, smoothed)": Q.col(hits, Q.F_STATISTIC),
                "threshold": Q.col(hits, Q.F_THRESHOLD),
                "error rate": Q.col(hits, "error_rate"),
                "reference error rate": Q.col(hits, "reference_error_rate"),
            }
        )
        ui.table(table)
    else:
        st.caption("No detection in this time range.")
    d = es.dropna(subset=["error_rate"]) if "error_rate" in es else es.iloc[0:0]
    if len(d):
        st.altair_chart(
            charts.lines(
                d,
                "error_rate",
                fmt=".1%",
                y_title="wrong share",
                title="Error rate per window (line: reference)",
                rule=ui.median(Q.col(d, "reference_error_rate")),
            ),
            width="stretch",
        )


def render(ctx: ui.Ctx) -> None:
    f = D.fetch(
        perf=(D.performance_series, (ctx.conn, ctx.scope)),
        latest=(D.performance_latest, (ctx.conn, ctx.scope)),
        lab=(D.performance_labels, (ctx.conn, ctx.scope)),
        pred=(D.prediction_drift, (ctx.conn, ctx.scope)),
        es=(_error_stream, (ctx.conn, ctx.scope)),
        status=(D.evaluator_status, (ctx.conn, ctx.scope)),
    )
    perf = f["perf"]
    status = f["status"]
    _cbpe_state(ctx, f["latest"], status)
    if not len(perf):
        ui.empty(
            f"No performance results for `{ctx.model}` in the {ctx.range_label}.",
            f"Realized performance needs labels: publish them to `{ctx.settings.topic_labels}` with the event id "
            "they answer; the worker joins them to predictions and scores each window. Estimated performance "
            "(from the model's own probabilities) appears as soon as windows close.",
        )
    else:
        metrics = sorted(perf["metric"].dropna().unique().tolist(), key=lambda m: (m != "accuracy", m))
        _latest_metrics(ctx, metrics, f["latest"])
        for m in metrics:
            d = perf[(perf["metric"] == m)].dropna(subset=["value"])
            rules = ui.rule_thresholds(ctx, "performance.value", metric=m)
            if m == "accuracy":
                chart = charts.lines_with_band(
                    d,
                    "value",
                    Q.F_LOWER,
                    Q.F_UPPER,
                    color="kind",
                    band_of="estimated",
                    title=perf_title(m, Q.col(d, "kind", ""), band=True),
                    y_title="accuracy",
                    fmt=_fmt(m),
                    rules=rules,
                )
            else:
                chart = charts.lines(
                    d,
                    "value",
                    color="kind",
                    title=perf_title(m, Q.col(d, "kind", "")),
                    y_title=m,
                    fmt=_fmt(m),
                    rules=rules,
                    band=(Q.F_BAND_LOWER, Q.F_BAND_UPPER),
                )  # the estimate's reference-chunk band
            st.altair_chart(chart, width="stretch")
        _estimation_error(perf)
        st.caption(
            "Realized = computed from the true labels joined to the predictions, plotted at the window in "
            "which the labels were joined; estimated = confidence-based (CBPE) from the model's own "
            "probabilities, available before labels arrive. A gap that opens between them is a sign of "
            "concept drift or of a model that is no longer calibrated."
        )

    st.subheader("Labels")
    lab = f["lab"]
    if not len(lab):
        ui.empty(
            "No labels joined yet.",
            f"Coverage and delay appear once labels for `{ctx.model}` arrive on `{ctx.settings.topic_labels}`.",
        )
    else:
        c1, c2 = st.columns(2)
        if Q.F_LABEL_COVERAGE in lab and lab[Q.F_LABEL_COVERAGE].notna().any():
            cov = lab.dropna(subset=[Q.F_LABEL_COVERAGE])
            c1.altair_chart(
                charts.lines(
                    cov, Q.F_LABEL_COVERAGE, fmt=".1%", y_title="labelled share", title="Label coverage (cumulative)"
                ),
                width="stretch",
            )
            last = cov.iloc[-1]
            c1.caption(
                f"{ui.fmt_num(last.get('matched'), ',.0f')} of {ui.fmt_num(last.get('predictions'), ',.0f')} "
                f"predictions labelled; {ui.fmt_num(last.get('pending'), ',.0f')} waiting, "
                f"{ui.fmt_num(last.get('expired'), ',.0f')} expired unlabelled."
            )
        if "delay_p50" in lab and lab["delay_p50"].notna().any():
            d = lab.dropna(subset=["delay_p50"])
            scale, unit = ui.delay_unit(ui.median(d["delay_p50"]) or 0.0)
            long = pd.concat(
                [
                    pd.DataFrame({"time": d["time"], "delay": d["delay_p50"] / scale, "quantile": "median"}),
                    pd.DataFrame(
                        {
                            "time": d["time"],
                            "delay": pd.to_numeric(Q.col(d, "delay_p95"), errors="coerce") / scale,
                            "quantile": "95th percentile",
                        }
                    ),
                ]
            ).dropna()
            c2.altair_chart(
                charts.lines(
                    long,
                    "delay",
                    color="quantile",
                    fmt=".1f",
                    zero=True,
                    y_title=unit,
                    title="Label delay: prediction to label",
                ),
                width="stretch",
            )

    _error_stream_section(ctx, f["es"])

    st.subheader("Prediction drift")
    pred, pred_latest = f["pred"]
    why = _not_computed(status, "prediction_drift")
    if not len(pred) and why:
        ui.empty(
            f"Prediction drift is not computed: {why}.",
            "The worker compares each window's predictions with the reference's (no labels needed); with a "
            "file reference, the file must carry the model's outputs (docs/references.md).",
        )
    elif not len(pred):
        ui.empty(
            "No prediction-drift results yet.",
            "The worker compares each window's predictions with the reference's (no labels needed).",
        )
    else:
        for _, row in pred_latest.iterrows():
            p = row.get(Q.F_P_VALUE)
            shown = ui.fmt_p(p)
            basis = (
                f"p {shown if shown.startswith('<') else '= ' + shown} vs threshold "
                f"{ui.fmt_num(row.get(Q.F_THRESHOLD), '.3g')}"
                if p is not None and pd.notna(p)
                else f"threshold {ui.fmt_num(row.get(Q.F_THRESHOLD), '.3g')}"
            )
            out = OUTPUT_NAMES.get(str(row.get("feature")), str(row.get("feature")))
            st.markdown(
                f"**{out}** — latest window ({ui.fmt_time(row.get('time'))}): "
                f"**{'drift' if row.get(Q.F_DRIFT) else 'no drift'}**, {ui.test_name(row.get('detector'))} statistic "
                f"{ui.fmt_num(row.get(Q.F_STATISTIC), '.4g')}, {basis}; window of "
                f"{ui.count(row.get(Q.F_N_CUR), 'prediction')} vs reference of "
                f"{ui.fmt_num(row.get(Q.F_N_REF), ',.0f')}."
            )
        y = Q.F_P_VALUE if Q.F_P_VALUE in pred and pred[Q.F_P_VALUE].notna().any() else Q.F_STATISTIC
        d = pred.dropna(subset=[y]).copy()
        if y == Q.F_P_VALUE:
            d[y] = d[y].clip(lower=1e-300)
        d["output"] = Q.col(d, "feature", "").astype(str).map(lambda f: OUTPUT_NAMES.get(f, f))
        st.altair_chart(
            charts.lines(
                d,
                y,
                log=(y == Q.F_P_VALUE),
                color="output",
                title="Prediction drift over time",
                y_title=f"smallest {y.replace('_', '-')}",
                rule=ui.median(Q.col(d, Q.F_THRESHOLD)),
            ),
            width="stretch",
        )
    missing = [(EVALUATORS[e], r) for e in EVALUATORS if (r := _not_computed(status, e))]
    if missing:
        st.subheader("Not computed")
        st.markdown("\n".join(f"- **{name}**: {reason}." for name, reason in missing))
    ui.links(ctx, [("drift", f"Data drift of {ctx.model}"), ("alerts", "Alerts"), ("overview", "Overview")])


ctx = ui.current()
ui.body(
    ctx,
    render,
    title="Concept drift & performance",
    caption="Is the model still right? Realized performance once labels arrive, estimated performance meanwhile.",
)
