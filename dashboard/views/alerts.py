"""Alerts: timeline of firing and resolved alerts, their webhook deliveries and failures."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import budget as BV
from dashboard import charts, ui
from dashboard import data as D
from dashboard import queries as Q
from dashboard.config import monitor_config, monitor_model

SERIES_TAGS = ("feature", "metric", "source", "detector")
FAILED = ("failed",)


def _label(df: pd.DataFrame) -> pd.Series:
    lab = Q.col(df, "model", "").fillna("").astype(str) + " · " + Q.col(df, Q.F_RULE, "").fillna("").astype(str)
    for c in SERIES_TAGS:
        if c in df:
            lab = lab + df[c].fillna("").astype(str).map(lambda v: f" · {v}" if v else "")
    return lab


def _mine(df: pd.DataFrame, models: list[str]) -> pd.DataFrame:
    return df[df["model"].isin(models)] if len(df) and "model" in df else df


def rules_note(ctx: ui.Ctx) -> None:
    """Say which rules watch the model, or that none does (then nothing here can ever fire)."""
    m = monitor_model(ctx.settings.monitors, ctx.model)
    if m is None:
        st.caption(
            f"`{ctx.model}` is not in the monitor config this dashboard reads (`{ctx.settings.monitors}`), "
            "so its alert rules are not known here."
        )
    elif not m.alerts:
        st.warning(
            f"**`{ctx.model}` has no alert rules**, so nothing on this page can fire for it. Add rules "
            f"under `alerts:` in its entry of `{ctx.settings.monitors}` (docs/alerts.md).",
            icon=":material/notifications_off:",
        )
    else:
        st.caption(
            f"Rules of `{ctx.model}`: " + "; ".join(f"`{r.name}` ({r.condition_text()})" for r in m.alerts) + "."
        )


def render(ctx: ui.Ctx) -> None:
    rules_note(ctx)
    only = st.toggle(f"Only {ctx.model}", value=True, key="dw_alerts_only", help="off: every model you may see")
    models = [ctx.model] if only else ctx.models
    scope = ctx.scope if only else Q.Scope(ctx.rng)
    f = D.fetch(
        points=(D.alert_points, (ctx.conn, scope)),
        active=(D.active_alerts, (ctx.conn,)),
        dl=(D.deliveries, (ctx.conn, scope)),
    )
    points = _mine(f["points"], models)
    active = _mine(f["active"], models)
    dl = _mine(f["dl"], models)
    status = Q.col(dl, Q.F_DELIVERY_STATUS, "").astype(str)
    failed = dl[status.isin(FAILED)] if len(dl) else dl
    changes = Q.alert_changes(points)

    row = ui.metric_row()
    row.metric("Firing now", len(active), width="content")
    row.metric("Fired in range", int((Q.col(changes, Q.F_STATE, "") == Q.STATE_FIRING).sum()), width="content")
    row.metric("Resolved in range", int((Q.col(changes, Q.F_STATE, "") == Q.STATE_RESOLVED).sum()), width="content")
    row.metric("Failed deliveries", len(failed), help="webhook deliveries given up after all retries", width="content")

    if len(active):
        st.markdown("**Firing now**")
        show = [
            c
            for c in (
                "time",
                "model",
                "version",
                "severity",
                Q.F_RULE,
                *SERIES_TAGS,
                Q.F_MESSAGE,
                Q.F_VALUE,
                Q.F_THRESHOLD,
            )
            if c in active
        ]
        ui.table(
            active[show].rename(columns={"time": "last window"}),
            column_config={"last window": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm")},
        )

    st.subheader("Timeline")
    iv = Q.alert_intervals(points)
    if not len(points):
        ui.empty(
            f"No alert was pending, firing or resolved in the {ctx.range_label}.",
            "Alert rules are set per model in the monitor config (`alerts:`); their periods show here.",
        )
    else:
        if len(iv):
            iv = iv.assign(alert=_label(iv))
            tips = [c for c in ("alert", "status", "severity", Q.F_MESSAGE, "ongoing") if c in iv]
            st.altair_chart(charts.timeline(iv, row="alert", tooltip=tips), width="stretch")
            st.caption(
                "Bars: pending (orange) and firing (red) periods; a bar ends when the alert resolved "
                "(lighter bars are still open)."
            )
        st.markdown("**State changes**")
        show = [
            c
            for c in (
                "time",
                Q.F_STATE,
                "severity",
                "model",
                "version",
                Q.F_RULE,
                *SERIES_TAGS,
                Q.F_MESSAGE,
                Q.F_VALUE,
                Q.F_THRESHOLD,
                Q.F_SILENCED,
            )
            if c in changes
        ]
        ui.table(
            changes[show],
            column_config={"time": st.column_config.DatetimeColumn("window end", format="YYYY-MM-DD HH:mm:ss")},
        )

    st.subheader("Webhook deliveries")
    if not len(dl):
        ui.empty(
            "No webhook delivery in this range.",
            "Deliveries are logged when a firing or resolved alert is sent to its webhooks.",
        )
    else:
        if len(failed):
            st.error(
                f"{len(failed)} delivery(ies) failed in the {ctx.range_label}: "
                + ", ".join(sorted(set(Q.col(failed, Q.T_ENDPOINT, "?").astype(str)))),
                icon=":material/error:",
            )
        first = [
            c
            for c in (
                "time",
                Q.F_DELIVERY_STATUS,
                Q.F_HTTP_STATUS,
                Q.T_ENDPOINT,
                Q.F_EVENT,
                "model",
                Q.F_RULE,
                Q.F_ATTEMPTS,
                Q.F_LAST_ERROR,
                "latency_ms",
            )
            if c in dl
        ]
        ui.table(
            dl[first], column_config={"time": st.column_config.DatetimeColumn("created", format="YYYY-MM-DD HH:mm:ss")}
        )
    budget_section(ctx)
    ui.links(ctx, [("overview", "Overview"), ("drift", f"Data drift of {ctx.model}"), ("quality", "Data quality")])


def budget_section(ctx: ui.Ctx) -> None:
    """The deployment's false-alarm budget: declared, its allocation per model, the alarms spent."""
    st.subheader("False-alarm budget")
    cfg = monitor_config(ctx.settings.monitors)
    if cfg is None or cfg.alarm_budget is None:
        ui.empty(
            "No false-alarm budget is declared"
            + ("" if cfg is not None else " (the monitor config the worker runs with cannot be read here)")
            + ".",
            "Declare how many false alarms a day or week you accept across all models, features and "
            "segments (`alarm_budget: {false_alarms: 2, per: day}` in the monitor config); driftwatch "
            "derives every drift test's level from it.",
        )
        return
    seconds = BV.period_seconds(cfg.alarm_budget.per)
    view = BV.budget_view(cfg, D.budget_spent(ctx.conn, seconds))
    period = f"last {cfg.alarm_budget.per}"
    row = ui.metric_row()
    row.metric(
        f"Budget per {view.per}",
        ui.fmt_num(view.budget, ",.3g"),
        width="content",
        help="false alarms accepted across all models, features and segments",
    )
    row.metric(
        f"Alarms spent ({period})",
        view.spent,
        width="content",
        delta=f"{view.spent - view.budget:+.3g} vs budget",
        delta_color="inverse",
        help="window-level drift verdicts raised, every segment included; on a stream without "
        "drift each one is a false alarm",
    )
    row.metric(
        f"Expected on stable data per {view.per}",
        ui.fmt_num(view.expected, ",.3g"),
        width="content",
        help="what the allocation spends when nothing drifts (below the budget where a level is "
        "capped or a model's event rate is not known yet)",
    )
    if view.spent > view.budget:
        st.warning(
            f"{view.spent} drift alarms in the {period}, over the budget of {view.budget:g}: either the "
            "data really moved (check the Drift page) or the thresholds need the reference's chunks "
            "(`drift.threshold`).",
            icon=":material/warning:",
        )
    st.dataframe(
        view.table,
        hide_index=True,
        width="stretch",
        column_config={
            "allotted": st.column_config.NumberColumn(f"allotted per {view.per}", format="%.3g"),
            "spent": st.column_config.NumberColumn(f"spent ({period})", format="%d"),
            "windows": st.column_config.NumberColumn(f"windows per {view.per}", format="%.4g"),
            "level per window": st.column_config.NumberColumn(format="%.2e"),
            "level per test": st.column_config.NumberColumn(format="%.2e"),
            "online alarms": st.column_config.NumberColumn(
                f"online alarms per {view.per}",
                format="%.3g",
                help="the online detectors' expected false alarms "
                "(features x events / ert), deducted from the budget "
                "first; empty: event rate not known yet",
            ),
        },
    )
    st.caption(
        "Allocation: the online detectors' expected false alarms come off the budget first; the rest is "
        "shared by every alarming verdict family (per window: univariate drift and data quality, each also "
        "per segment; prediction drift; multivariate drift when on; CBPE's estimate band). `spent` counts "
        "the univariate drift verdicts only. "
        "The budget is shared by test families (a window's features, and each segment's), "
        "and spread evenly over each model's windows: level per window = budget / (all families × the "
        "model's windows); each feature gets its Bonferroni share. `rate from`: how the window rate is "
        "known (window length, a declared event rate, or the rate observed here)."
    )


ctx = ui.current()
ui.body(ctx, render, title="Alerts", caption="When alerts fired and resolved, and whether their webhooks got through.")
