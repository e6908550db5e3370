"""Adversarial: the combined score and its components over time; flagged sources.

The worker's combined score is ``1 - p`` where ``p`` is the Bonferroni-combined
p-value of the components (outlier rate, low-margin rate, squeeze, model
extraction); a window is flagged when ``p < alpha`` (score above ``1 - alpha``).
Each component reports its rate in the window, the reference rate, the change and
its own p-value (fields ``<component>_rate``, ``_ref_rate``, ``_change``, ``_p_value``).
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import charts, ui
from dashboard import data as D
from dashboard import queries as Q

P_SUFFIX = Q.P_SUFFIX
components = Q.adversarial_components


def render(ctx: ui.Ctx) -> None:
    f = D.fetch(series=(D.adversarial_series, (ctx.conn, ctx.scope)), latest=(D.adversarial_latest, (ctx.conn, ctx.scope)),
                src=(D.sources, (ctx.conn, ctx.scope)))
    series = f["series"]
    if not len(series):
        ui.empty(
            f"No adversarial scores for `{ctx.model}` in the {ctx.range_label}.",
            "The worker scores every window for out-of-distribution inputs, low-margin probing and model "
            "extraction once the reference is complete. Widen the time range, or check that the worker is running.",
        )
    else:
        latest = f["latest"]
        comps = components(list(series.columns))
        thr = ui.median(Q.col(series, Q.F_THRESHOLD))
        if len(latest):
            row = latest.sort_values("time").iloc[-1]
            cols = st.columns(1 + min(4, len(comps)))
            flagged = bool(row.get(Q.F_FLAGGED)) if pd.notna(row.get(Q.F_FLAGGED)) else False
            cols[0].metric("Combined score (latest window)", ui.fmt_num(row.get(Q.F_SCORE), ".4f"),
                           delta="flagged" if flagged else "not flagged", delta_color="inverse" if flagged else "off", delta_arrow="off",
                           help=f"1 − combined p-value (p = {ui.fmt_p(row.get(Q.F_P_VALUE))}); flagged above "
                                f"{ui.fmt_num(row.get(Q.F_THRESHOLD), '.3g')}; window ending {ui.fmt_time(row.get('time'))}")
            for c, name in zip(cols[1:], comps):
                rate, ref = row.get(f"{name}_rate"), row.get(f"{name}_ref_rate")
                c.metric(f"{name.replace('_', ' ')} p-value", ui.fmt_p(row.get(f"{name}{P_SUFFIX}")),
                         help=f"rate {ui.fmt_num(rate, '.3g')} vs reference {ui.fmt_num(ref, '.3g')}")
        if Q.F_SCORE in series:
            st.altair_chart(charts.lines(series.dropna(subset=[Q.F_SCORE]), Q.F_SCORE, title="Combined adversarial score (mean per bucket)",
                                         y_title="1 − combined p", rule=thr,
                                         rule_label=f"flagged above {ui.fmt_num(thr, '.3g')}",
                                         rules=ui.rule_thresholds(ctx, "adversarial.score")), width="stretch")
        if comps:
            long = series.melt(id_vars=["time"], value_vars=[f"{c}{P_SUFFIX}" for c in comps if f"{c}{P_SUFFIX}" in series],
                               var_name="component", value_name="p").dropna()
            long["component"] = long["component"].str[: -len(P_SUFFIX)]
            long["p"] = long["p"].clip(lower=1e-300)
            alpha = 1.0 - thr if thr is not None else None
            st.altair_chart(charts.lines(long, "p", color="component", log=True, title="Components: p-value (mean per bucket)",
                                         y_title="p-value (log)", rule=alpha,
                                         rule_label=f"alpha {ui.fmt_num(alpha, '.3g')} (before Bonferroni)"),
                            width="stretch")
            rates = [c for c in comps if f"{c}_rate" in series]
            if rates:
                st.caption("Component rates in the latest window vs the reference: " + "; ".join(
                    f"{c.replace('_', ' ')} {ui.fmt_num(latest.iloc[-1].get(f'{c}_rate'), '.3g')} vs "
                    f"{ui.fmt_num(latest.iloc[-1].get(f'{c}_ref_rate'), '.3g')}" for c in rates) + ".")

    st.subheader("Sources")
    src = f["src"]
    if not len(src):
        st.info("No per-source scores in this range. Sources are tracked when events carry a source/client id "
                "(only the top-K sources get their own series).", icon=":material/info:")
    else:
        flagged = src[src["flagged_windows"] > 0]
        if len(flagged):
            st.error(f"{len(flagged)} source(s) flagged in the {ctx.range_label}: "
                     + ", ".join(f"`{s}`" for s in flagged["source"]), icon=":material/gpp_maybe:")
        else:
            st.success("No source flagged in this range.", icon=":material/check_circle:")
        show = [c for c in ("source", "flagged_windows", "windows", Q.F_SCORE, "max_score", Q.F_EXTRACTION_FLAG, "n_queries",
                            "time") if c in src]
        ui.table(src[show], column_config={
            "flagged_windows": st.column_config.NumberColumn("windows flagged"),
            "windows": st.column_config.NumberColumn("windows seen"),
            Q.F_SCORE: st.column_config.NumberColumn("latest score", format="%.3f"),
            "max_score": st.column_config.NumberColumn("max score", format="%.3f"),
            Q.F_EXTRACTION_FLAG: st.column_config.CheckboxColumn("flagged now"),
            "n_queries": st.column_config.NumberColumn("queries seen"),
            "time": st.column_config.DatetimeColumn("last seen", format="YYYY-MM-DD HH:mm"),
        })
    ui.links(ctx, [("drift", f"Data drift of {ctx.model}"), ("alerts", "Alerts"), ("overview", "Overview")])


ctx = ui.current()
ui.body(ctx, render, title="Adversarial",
        caption="Is someone probing the model? The combined score, its components and the sources behind them.")
