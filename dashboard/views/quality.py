"""Data quality: missing, out-of-range, unknown-category and type-error rates per feature; dead letters."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from dashboard import charts, ui
from dashboard import data as D
from dashboard import queries as Q

RATE_LABELS = {
    "missing_rate": "missing",
    "out_of_range_rate": "out of range",
    "unknown_category_rate": "unknown category",
    "type_error_rate": "type error",
    "null_violation_rate": "null violation",
}
TOP_N = 8


def render(ctx: ui.Ctx) -> None:
    rate = st.session_state.get("dw_q_rate", Q.QUALITY_RATES[0])
    rate = rate if rate in Q.QUALITY_RATES else Q.QUALITY_RATES[0]
    f = D.fetch(
        series=(D.quality_series, (ctx.conn, ctx.scope, (rate, f"{rate}_upper"))),
        latest=(D.quality_latest, (ctx.conn, ctx.scope)),
        dl=(D.deadletters, (ctx.conn, ctx.scope)),
        dl_models=(D.deadletter_models, (ctx.conn, ctx.scope)),
    )
    series = f["series"]
    latest = f["latest"]
    if not len(series):
        ui.empty(
            f"No data-quality results for `{ctx.model}` in the {ctx.range_label}.",
            "The worker checks every window against the feature expectations of the monitor config "
            "(range, allowed values, nullable). Widen the time range, or check that the worker is running.",
        )
    else:
        rates = [r for r in Q.QUALITY_RATES if r in latest] or [rate]
        if len(latest):
            worst = {r: pd.to_numeric(Q.col(latest, r), errors="coerce").max() for r in rates}
            row = ui.metric_row()
            for r in rates:
                row.metric(
                    f"Worst {RATE_LABELS[r]} rate",
                    ui.fmt_pct(worst[r]),
                    help="the highest rate over features in the latest window",
                    width="content",
                )
        st.radio(
            "Rate",
            rates,
            index=rates.index(rate) if rate in rates else 0,
            format_func=lambda r: RATE_LABELS.get(r, r),
            horizontal=True,
            key="dw_q_rate",
        )
        s = series.dropna(subset=[rate]) if rate in series else series.iloc[0:0]
        peak = s.groupby("feature")[rate].max().sort_values(ascending=False, kind="stable")
        order = peak.index.tolist()
        top = max(float(peak.max()), 1e-6) if len(peak) else 1.0
        shown = order[: Q.HEATMAP_TOP]
        more = len(order) > len(shown)

        def heat(feats: list[str], what: str) -> None:
            st.altair_chart(
                charts.heatmap(
                    s[s["feature"].isin(feats)],
                    rate,
                    bucket_s=Q.bucket_seconds(ctx.rng.heat_bucket),
                    order=feats,
                    legend=f"{RATE_LABELS[rate]} rate",
                    domain=(0.0, top),
                    hot="#e65100",
                    start=ctx.data_start,
                    now=pd.Timestamp.now(tz="UTC"),
                    title=f"{what} ({ctx.rng.heat_bucket} buckets): mean {RATE_LABELS[rate]} rate",
                    tooltip=[alt.Tooltip(f"{rate}:Q", format=".2%", title=f"{RATE_LABELS[rate]} rate")],
                ),
                width="stretch",
            )

        any_bad = bool(len(peak)) and float(peak.max()) > 0
        if any_bad:  # an all-zero heatmap says nothing the line below does not
            heat(
                shown,
                f"The {len(shown)} features with the highest {RATE_LABELS[rate]} rate" if more else "Feature × time",
            )
        if more and any_bad:  # the rest only when asked for: every cell is drawing time in the browser
            exp = st.expander(
                f"All {len(order)} features × time", key="dw_q_heat_all", on_change="rerun", icon=":material/grid_on:"
            )
            if exp.open:
                with exp:
                    heat(order, f"All {len(order)} features")
        worst_feats = [f for f in order[:TOP_N] if peak[f] > 0]
        if worst_feats:
            st.caption(
                "Worst features: "
                + ", ".join(f"`{f}` (peak {ui.fmt_pct(peak[f])})" for f in worst_feats)
                + " (peak = the highest mean over a bucket)."
            )
            lines = st.expander(
                f"The {len(worst_feats)} worst features over time, as lines",
                key="dw_q_lines",
                on_change="rerun",
                icon=":material/show_chart:",
            )
            if lines.open:  # a chart is drawing time in the browser: only when asked for
                with lines:
                    st.altair_chart(
                        charts.lines(
                            s[s["feature"].isin(worst_feats)],
                            rate,
                            color="feature",
                            fmt=".2%",
                            y_title=f"{RATE_LABELS[rate]} rate",
                            zero=True,
                            rules=ui.rule_thresholds(ctx, f"quality.{rate}"),
                            # the band the rate was judged against (one feature: bands of several
                            # features would overlap); the table lists every feature's
                            band=(f"{rate}_lower", f"{rate}_upper") if len(worst_feats) == 1 else None,
                            title=f"The {ui.count(len(worst_feats), 'worst feature')} over time",
                        ),
                        width="stretch",
                    )
        else:
            st.success(
                f"No {RATE_LABELS[rate]} values in the {ctx.range_label} ({ui.count(len(order), 'feature')} checked).",
                icon=":material/check_circle:",
            )
        if len(latest):
            st.markdown("**Latest window per feature**")
            # "features": the names of undeclared features (row __undeclared__), with their event counts
            show = [
                "feature",
                *rates,
                *[f"{r}_upper" for r in rates],
                "quality_alarm",
                "n",
                *[c for c in latest.columns if c.startswith("n_")],
                "features",
                "time",
            ]
            show = [c for c in dict.fromkeys(show) if c in latest]
            cfg = {r: st.column_config.NumberColumn(RATE_LABELS[r], format="percent") for r in rates}
            cfg.update(
                {
                    f"{r}_upper": st.column_config.NumberColumn(
                        f"{RATE_LABELS[r]} band",
                        format="percent",
                        help="the highest rate that is no alarm (reference chunks or binomial bound)",
                    )
                    for r in rates
                }
            )
            cfg["time"] = st.column_config.DatetimeColumn("window end", format="YYYY-MM-DD HH:mm")
            ui.table(latest[show].sort_values(rates[0], ascending=False), column_config=cfg)

    st.subheader("Dead letters")
    dl = f["dl"]
    if not len(dl):
        st.success(f"No message was dead-lettered in the {ctx.range_label}.", icon=":material/check_circle:")
    else:
        c1, c2 = st.columns([3, 1])
        c1.altair_chart(
            charts.bars_over_time(dl, "count", "reason", y_title="messages", title="Dead-lettered messages by reason"),
            width="stretch",
        )
        with c2:
            ui.table(f["dl_models"])
        st.caption(
            f"Malformed messages go to `{ctx.settings.topic_deadletter}` with their reason, nothing is "
            "dropped. Messages too broken to name a model are counted on every model's page. "
            "`driftwatch deadletter list` shows them; `driftwatch deadletter replay` sends them again "
            "once the config is fixed (e.g. an unknown model declared)."
        )
    ui.links(ctx, [("drift", f"Data drift of {ctx.model}"), ("overview", "Overview"), ("alerts", "Alerts")])


ctx = ui.current()
ui.body(
    ctx,
    render,
    title="Data quality",
    caption="Missing, out-of-range, unknown-category and type-error rates per feature, and dead-lettered messages.",
)
