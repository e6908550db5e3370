"""Adversarial: the combined score, which component raised a flag, and the sources behind it.

The worker's combined score is ``1 - p`` where ``p`` is the Bonferroni-combined
p-value of the components in the score: the *source contrasts* (does one client's
low-margin or off-manifold rate stand out from the rest of the window?, fields
``<name>_source_p_value``, ``_rate``, ``_rest_rate``, ``_suspect``) and model
extraction. A window is flagged when ``p < alpha``; ``flagged_by`` names the
components that raised it. The population rates against the reference
(``<name>_rate``, ``_ref_rate``, ``_p_value``) say whether the inputs moved (data
drift raises them) and are shown apart, outside the score.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import charts, ui
from dashboard import data as D
from dashboard import queries as Q

P_SUFFIX = Q.P_SUFFIX
components = Q.adversarial_components


def _label(name: str) -> str:
    return name.replace("_source", " (source contrast)").replace("_", " ")


def _verdict(row: pd.Series) -> str:
    """'flagged by low margin (source contrast) — evader-1' for a flagged window's row."""
    by = row.get(Q.F_FLAGGED_BY)
    if not isinstance(by, str) or not by:
        return "flagged"
    parts = []
    for name in by.split(","):
        who = row.get(f"{name}_suspect")
        parts.append(_label(name) + (f" — {who}" if isinstance(who, str) and who else ""))
    return "flagged by " + "; ".join(parts)


def render(ctx: ui.Ctx) -> None:
    f = D.fetch(
        series=(D.adversarial_series, (ctx.conn, ctx.scope)),
        latest=(D.adversarial_latest, (ctx.conn, ctx.scope)),
        src=(D.sources, (ctx.conn, ctx.scope)),
        flags=(D.adversarial_flags, (ctx.conn, ctx.scope)),
    )
    series = f["series"]
    if not len(series):
        ui.empty(
            f"No adversarial scores for `{ctx.model}` in the {ctx.range_label}.",
            "The worker scores every window for out-of-distribution inputs, low-margin probing and model "
            "extraction once the reference is complete. Widen the time range, or check that the worker is running.",
        )
    else:
        latest = f["latest"]
        every = components(list(series.columns))
        comps = Q.adversarial_scored(every) or every
        population = [c for c in every if c not in comps]
        thr = ui.median(Q.col(series, Q.F_THRESHOLD))
        if len(latest):
            row = latest.sort_values("time").iloc[-1]
            cells = ui.metric_row()
            flagged = bool(row.get(Q.F_FLAGGED)) if pd.notna(row.get(Q.F_FLAGGED)) else False
            top = row.get("top_component")
            cells.metric(
                "Combined score (latest window)",
                ui.fmt_num(row.get(Q.F_SCORE), ".4f"),
                width="content",
                delta=_verdict(row) if flagged else "not flagged",
                delta_color="inverse" if flagged else "off",
                delta_arrow="off",
                help=f"1 − combined p-value (p = {ui.fmt_p(row.get(Q.F_P_VALUE))}); flagged above "
                f"{ui.fmt_num(row.get(Q.F_THRESHOLD), '.3g')}; closest component: "
                f"{_label(top) if isinstance(top, str) else '—'}; window ending {ui.fmt_time(row.get('time'))}",
            )
            shown = [c for c in comps if pd.notna(row.get(f"{c}{P_SUFFIX}"))]
            for name in shown[:4]:
                if name.endswith("_source"):
                    hint = (
                        f"suspect {row.get(f'{name}_suspect') or '—'}: rate {ui.fmt_num(row.get(f'{name}_rate'), '.3g')}"
                        f" vs the rest of the window {ui.fmt_num(row.get(f'{name}_rest_rate'), '.3g')}"
                    )
                else:
                    hint = (
                        f"rate {ui.fmt_num(row.get(f'{name}_rate'), '.3g')} vs reference "
                        f"{ui.fmt_num(row.get(f'{name}_ref_rate'), '.3g')}"
                    )
                cells.metric(
                    f"{_label(name)} p-value", ui.fmt_p(row.get(f"{name}{P_SUFFIX}")), help=hint, width="content"
                )
            if missing := [_label(c) for c in comps if c not in shown]:
                st.caption(
                    "Not measured in the latest window: "
                    + ", ".join(missing)
                    + " (a regression model has no decision margin; a window without the rows a component needs)."
                )
        flags = f["flags"]
        if len(flags):
            show = flags.assign(verdict=[_verdict(r) for _, r in flags.iterrows()])
            st.warning(
                f"{len(flags)} flagged window(s) in the {ctx.range_label}; latest: "
                f"{ui.fmt_time(show['time'].iloc[0])}, {show['verdict'].iloc[0]}",
                icon=":material/gpp_maybe:",
            )
            ui.table(
                show[[c for c in ("time", Q.F_SCORE, "verdict") if c in show]],
                column_config={
                    "time": st.column_config.DatetimeColumn("window end", format="YYYY-MM-DD HH:mm:ss"),
                    Q.F_SCORE: st.column_config.NumberColumn("score", format="%.4f"),
                    "verdict": st.column_config.TextColumn("which component raised it"),
                },
            )
        if Q.F_SCORE in series:
            st.altair_chart(
                charts.lines(
                    series.dropna(subset=[Q.F_SCORE]),
                    Q.F_SCORE,
                    title="Combined adversarial score (mean per bucket)",
                    y_title="1 − combined p",
                    rule=thr,
                    rule_label=f"flagged above {ui.fmt_num(thr, '.3g')}",
                    rules=ui.rule_thresholds(ctx, "adversarial.score"),
                ),
                width="stretch",
            )
        if comps:
            long = series.melt(
                id_vars=["time"],
                value_vars=[f"{c}{P_SUFFIX}" for c in comps if f"{c}{P_SUFFIX}" in series],
                var_name="component",
                value_name="p",
            ).dropna()
            long["component"] = long["component"].str[: -len(P_SUFFIX)]
            long["p"] = long["p"].clip(lower=1e-300)
            alpha = 1.0 - thr if thr is not None else None
            long["component"] = long["component"].map(_label)
            st.altair_chart(
                charts.lines(
                    long,
                    "p",
                    color="component",
                    log=True,
                    title="Components in the score: p-value",
                    y_title="p-value (log)",
                    rule=alpha,
                    rule_label=f"alpha {ui.fmt_num(alpha, '.3g')} (before Bonferroni)",
                ),
                width="stretch",
            )
        rates = [c for c in population if f"{c}_rate" in series]
        if rates and len(latest):
            last = latest.iloc[-1]
            rates = [c for c in rates if pd.notna(last.get(f"{c}_rate"))]
        if rates and len(latest):
            st.caption(
                "Did the inputs move? Population rates in the latest window vs the reference (data drift "
                "raises them; not in the score): "
                + "; ".join(
                    f"{_label(c)} {ui.fmt_num(last.get(f'{c}_rate'), '.3g')} vs "
                    f"{ui.fmt_num(last.get(f'{c}_ref_rate'), '.3g')} (p = {ui.fmt_p(last.get(f'{c}{P_SUFFIX}'))})"
                    for c in rates
                )
                + "."
            )

    st.subheader("Sources")
    src = f["src"]
    if not len(src):
        st.info(
            "No per-source scores in this range. Sources are tracked when events carry a source/client id "
            "(only the top-K sources get their own series).",
            icon=":material/info:",
        )
    else:
        flagged = src[src["flagged_windows"] > 0]
        if len(flagged):
            st.error(
                f"{len(flagged)} source(s) flagged in the {ctx.range_label}: "
                + ", ".join(f"`{s}`" for s in flagged["source"]),
                icon=":material/gpp_maybe:",
            )
        else:
            st.success("No source flagged in this range.", icon=":material/check_circle:")
        show = [
            c
            for c in (
                "source",
                "flagged_windows",
                "windows",
                Q.F_SCORE,
                "max_score",
                Q.F_SOURCE_FLAG,
                Q.F_EXTRACTION_FLAG,
                Q.F_FLAGGED_BY,
                "n_queries",
                "time",
            )
            if c in src
        ]
        ui.table(
            src[show],
            column_config={
                "flagged_windows": st.column_config.NumberColumn("windows flagged"),
                "windows": st.column_config.NumberColumn("windows seen"),
                Q.F_SCORE: st.column_config.NumberColumn("latest score", format="%.3f"),
                "max_score": st.column_config.NumberColumn("max score", format="%.3f"),
                Q.F_SOURCE_FLAG: st.column_config.CheckboxColumn("flagged now"),
                Q.F_EXTRACTION_FLAG: st.column_config.CheckboxColumn("extraction"),
                Q.F_FLAGGED_BY: st.column_config.TextColumn("flagged by"),
                "n_queries": st.column_config.NumberColumn("queries seen"),
                "time": st.column_config.DatetimeColumn("last seen", format="YYYY-MM-DD HH:mm"),
            },
        )
    ui.links(ctx, [("drift", f"Data drift of {ctx.model}"), ("alerts", "Alerts"), ("overview", "Overview")])


ctx = ui.current()
ui.body(
    ctx,
    render,
    title="Adversarial",
    caption="Is someone probing the model? The combined score, its components and the sources behind them.",
)
