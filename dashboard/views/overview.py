"""Overview: every model's health, throughput, invalid rate, lag, alerts and last window."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import charts, ui
from dashboard import data as D
from dashboard import queries as Q

#: status colours, drawn as a coloured label in the table (a multiselect column, read-only):
#: no pandas Styler, whose import pulls in matplotlib (~1 s on a server's first view) and
#: which styles the table cell by cell
STATUS_COLOR = {
    "critical": "#c62828",
    "alerting": "#ef6c00",
    "drifting": "#ef6c00",
    "degraded": "#b58900",
    "stale": "#757575",
    "no data": "#757575",
    "ok": "#2e7d32",
}

#: status order for "Open a model": the model that needs a human first
SEVERITY = {s: i for i, s in enumerate(["critical", "alerting", "drifting", "degraded", "stale", "no data", "ok"])}


def render(ctx: ui.Ctx) -> None:
    f = D.fetch(
        ov=(D.overview, (ctx.conn, ctx.rng, tuple(ctx.models))),
        tp=(D.throughput, (ctx.conn, ctx.all_scope)),
        al=(D.active_alerts, (ctx.conn,)),
    )
    ov = f["ov"]
    if not len(ov):
        ui.empty(
            f"No windows from any of your {len(ctx.models)} model(s) in the {ctx.range_label}.",
            "Widen the time range in the sidebar, or check that the worker is running and consuming "
            f"`{ctx.settings.topic_inferences}` (`driftwatch worker`).",
        )
        return
    firing = int(ov["active_alerts"].sum())
    row = ui.metric_row()
    row.metric("Models", len(ov), help="models with results in the selected time range", width="content")
    row.metric("Alerts firing", firing, width="content")
    row.metric(
        "Models drifting",
        int(ov.get("drift", pd.Series(dtype=bool)).eq(True).sum()),
        width="content",
    )
    eps = pd.to_numeric(ov.get("events_per_s"), errors="coerce").sum()
    row.metric(
        "Events / s", ui.fmt_num(eps, ",.1f"), help="all models together, each in its latest window", width="content"
    )

    table = pd.DataFrame(
        {
            "model": ov["model"],
            "status": ov["status"].map(lambda v: [v]),  # one coloured label per row
            "why": ov["why"],
            "versions": Q.col(ov, "versions", ""),
            "last window": Q.col(ov, "last_window", None),
            "events/s": Q.col(ov, "events_per_s"),
            "invalid rate": Q.col(ov, "invalid_rate"),
            "lag (s)": Q.col(ov, "lag_s"),
            "consumer lag": Q.col(ov, "consumer_lag"),
            "alerts firing": ov["active_alerts"],
            "features drifting": Q.col(ov, "share_drifted"),
            "adversarial score": Q.col(ov, "adversarial_score"),
        }
    )
    for optional in ("lag (s)", "consumer lag"):  # only when the worker reports it
        if pd.to_numeric(table[optional], errors="coerce").isna().all():
            table = table.drop(columns=[optional])
    ui.table(
        table,
        column_config={
            "status": st.column_config.MultiselectColumn(
                "status",
                options=list(STATUS_COLOR),
                color=list(STATUS_COLOR.values()),
                disabled=True,
                help="health of the model: see the legend under the table",
            ),
            "last window": st.column_config.DatetimeColumn(
                format="YYYY-MM-DD HH:mm:ss", help="end of the latest window (UTC)"
            ),
            "events/s": st.column_config.NumberColumn(format="%.2f", help="throughput of the latest window"),
            "invalid rate": st.column_config.NumberColumn(
                format="percent", help="invalid events / events over the range"
            ),
            "lag (s)": st.column_config.NumberColumn(
                format="%.1f", help="seconds between the end of the latest window and the moment the worker closed it"
            ),
            "consumer lag": st.column_config.NumberColumn(
                format="%d", help="messages behind, when the worker reports it"
            ),
            "features drifting": st.column_config.ProgressColumn(
                min_value=0.0, max_value=1.0, format="percent", help="share of features drifting in the latest window"
            ),
            "adversarial score": st.column_config.NumberColumn(format="%.2f"),
        },
    )
    st.caption(
        "Status: critical / alerting = alerts firing now; drifting = the latest drift summary found drift; "
        f"degraded = more than {Q.INVALID_RATE_WARN:.0%} invalid events; stale = no window for "
        f"{Q.STALE_WINDOWS:g} window lengths (at least {Q.STALE_MIN_S / 60:.0f} min)."
    )

    st.subheader("Open a model")
    # one row of links for the picked model (the most severe first), not a row per model:
    # every element is drawing time in the browser, ~0.4 s for 10 rows of links
    by_severity = (
        ov.assign(_sev=ov["status"].map(SEVERITY).fillna(len(SEVERITY)))
        .sort_values(["_sev", "model"], kind="stable")["model"]
        .tolist()
    )
    # a row that wraps: at 1,024 px equal columns cut the picked model and the "performance" link
    row = st.container(horizontal=True, wrap=True, vertical_alignment="center", gap="medium")
    status = dict(zip(ov["model"], ov["status"]))
    m = row.selectbox(
        "Model",
        by_severity,
        key="dw_ov_open",
        label_visibility="collapsed",
        width=260,
        format_func=lambda x: f"{x} ({status.get(x, '')})",
    )
    params = ctx.link_params(model=m, version=None, segment=None)
    for key in ("drift", "quality", "performance", "alerts"):
        path, _t, icon, _u = ui.PAGES[key]
        row.page_link(path, label=key, icon=icon, query_params=params)

    tp = f["tp"]
    if len(tp):
        tp = tp[tp["model"].isin(ctx.models)]
    st.subheader("Throughput and invalid events")
    if not len(tp):
        ui.empty("No windows in this range.")
        return
    c1, c2 = st.columns(2)  # each chart gets only the columns it draws (less to send and parse)
    c1.altair_chart(
        charts.lines(
            tp[["time", "model", "events_per_s"]],
            "events_per_s",
            color="model",
            zero=True,
            fmt=",.1f",
            y_title="events / s (mean)",
            title="Events per second",
        ),
        width="stretch",
    )
    c2.altair_chart(
        charts.lines(
            tp[["time", "model", "invalid_rate"]].dropna(subset=["invalid_rate"]),
            "invalid_rate",
            color="model",
            y_title="invalid share",
            fmt=".2%",
            zero=True,
            title="Invalid events",
        ),
        width="stretch",
    )

    al = f["al"]
    if len(al) and "model" in al:
        al = al[al["model"].isin(ctx.models)]
    st.subheader("Alerts firing now")
    if not len(al):
        st.success("No alert is firing.", icon=":material/check_circle:")
    else:
        cols = [
            c for c in ("time", "model", "version", "severity", Q.F_RULE, "feature", Q.F_MESSAGE, Q.F_VALUE) if c in al
        ]
        ui.table(
            al[cols].rename(columns={"time": "last window"}),
            column_config={"last window": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm")},
        )
        ui.links(ctx, [("alerts", "All alerts")])


ctx = ui.current()
ui.body(
    ctx,
    render,
    title="Overview",
    caption="Every model you may see: health, throughput, invalid events, lag, alerts and its latest window.",
)
