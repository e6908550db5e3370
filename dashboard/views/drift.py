"""Data drift: feature × time heatmap, features ranked by drift and by impact, per-feature detail.

Every verdict on this page carries its test, statistic, p-value (or distance) and
threshold, the correction for many features, and the window sizes it came from.

Built for the browser's sake (each Vega mark costs drawing time in the browser, more
than any query): the heatmap draws the top ``HEATMAP_TOP`` features (most drifting
windows in the range first) and the others only when their expander is opened; the two
rankings are lazy tabs (one table drawn); the feature's p-value and effect sizes over time
and its last windows load when their expander is opened. Content is on the page, a click away.
"""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from dashboard import charts, privacy, ui
from dashboard import data as D
from dashboard import queries as Q

CORRECTIONS = {"bonferroni": "Bonferroni", "fdr": "Benjamini-Hochberg FDR", "none": "no correction"}


def verdict_text(row: pd.Series) -> str:
    """One sentence with everything a verdict rests on."""
    test = ui.test_name(row.get("detector"))
    stat = ui.fmt_num(row.get(Q.F_STATISTIC), ".4g")
    thr = row.get(Q.F_THRESHOLD)
    p = row.get(Q.F_P_VALUE)
    drift = bool(row.get(Q.F_DRIFT))
    has_p = p is not None and pd.notna(p)
    if has_p:
        rel = "<" if drift else "≥"
        shown = ui.fmt_p(p)
        basis = f"p {shown if shown.startswith('<') else '= ' + shown} {rel} threshold {ui.fmt_num(thr, '.3g')}"
    else:
        rel = ">" if drift else "≤"
        basis = f"statistic {rel} threshold {ui.fmt_num(thr, '.3g')}"
    if pd.isna(pd.to_numeric(row.get(Q.F_N_CUR), errors="coerce")) and pd.notna(
        pd.to_numeric(row.get("n"), errors="coerce")
    ):
        # an online (event-by-event) detector: no window-vs-reference sample sizes, but how many
        # events it tested and how rarely it raises a false alarm
        ert = row.get("ert")
        sizes = (
            f"{ui.count(row.get('n'), 'event')} of the window tested one by one against the reference"
            + (
                f" (a false alarm once per {ui.count(ert, 'event')})"
                if pd.notna(pd.to_numeric(ert, errors="coerce"))
                else ""
            )
            + (
                f", {ui.count(row.get('n_detections'), 'detection')} in it"
                if pd.notna(pd.to_numeric(row.get("n_detections"), errors="coerce"))
                else ""
            )
        )
    else:
        sizes = (
            f"window of {ui.count(row.get(Q.F_N_CUR), 'event')} vs reference of "
            f"{ui.fmt_num(row.get(Q.F_N_REF), ',.0f')}"
        )
    return (
        f"**{'Drift' if drift else 'No drift'}** — {test} statistic {stat}, {basis}; {sizes}; "
        f"window ending {ui.fmt_time(row.get('time'))}."
    )


def _summary(ctx: ui.Ctx, latest: pd.DataFrame, summ: pd.DataFrame) -> None:
    tests = (
        ", ".join(
            f"{ui.test_name(d)} ({ui.count(n, 'feature')})"
            for d, n in Q.col(latest, "detector", "").value_counts().items()
        )
        or "—"
    )
    n_cur = pd.to_numeric(Q.col(latest, Q.F_N_CUR), errors="coerce")
    n_ref = pd.to_numeric(Q.col(latest, Q.F_N_REF), errors="coerce")
    row = ui.metric_row()
    if len(summ):
        s = summ.iloc[0]
        nd, nf = s.get(Q.F_N_DRIFTED), s.get(Q.F_N_FEATURES)
        row.metric(
            "Drifting features",
            f"{ui.fmt_num(nd, '.0f')} / {ui.fmt_num(nf, '.0f')}",
            width="content",
            help=f"in the latest window, ending {ui.fmt_time(s.get('time'))}",
        )
        corr = CORRECTIONS.get(str(s.get(Q.F_CORRECTION)), str(s.get(Q.F_CORRECTION, "—")))
        c2 = ui.metric_cell(row)  # the level with its correction under it
        c2.metric(
            "Level",
            f"α = {ui.fmt_num(s.get(Q.F_P_VAL), '.3g')}",
            help=f"multiple-testing correction: {corr}",
            width="content",
        )
        c2.caption(corr)
    else:
        n_drift = int(Q.col(latest, Q.F_DRIFT, False).fillna(False).astype(bool).sum())
        row.metric("Drifting features", f"{n_drift} / {len(latest)}", help="in the latest window", width="content")
        row.metric("Level", "—", help="no drift summary written yet", width="content")
    row.metric(
        "Window (events)",
        ui.fmt_num(ui.median(n_cur), ",.0f"),
        help="median current-window size over features",
        width="content",
    )
    row.metric("Reference (events)", ui.fmt_num(ui.median(n_ref), ",.0f"), width="content")
    rules = ", ".join(sorted(set(_rules(latest))))
    st.caption(
        f"Tests: {tests}. Verdict rule: {rules} — a feature drifts when the judged value (p-value, "
        "statistic or effect size) leaves its band (columns rule and band), calibrated on chunks of the "
        "reference where the rule says so; with an effect floor, the shift must also be large."
    )


def _rules(df: pd.DataFrame) -> pd.Series:
    """Each row's verdict rule as the page names it; a point without a stored rule was judged on its
    p-value, or (online detectors, which have none) on its statistic."""
    unstated = pd.Series("p_value", index=df.index).where(Q.col(df, Q.F_P_VALUE).notna(), "statistic")
    return Q.col(df, "threshold_method").fillna(unstated).map(lambda m: ui.RULES.get(str(m), str(m)))


def _tables(ctx: ui.Ctx, latest: pd.DataFrame) -> None:
    cols = {
        "feature": "feature",
        "verdict": "verdict",
        "test": "test",
        Q.F_STATISTIC: "statistic",
        Q.F_P_VALUE: "p-value",
        Q.F_THRESHOLD: "threshold",
        "rule": "rule",
        "band": "band",
        "effect": "effect",
        "effect_floor": "effect floor",
        "effect_band": "effect band",
        Q.F_PSI: "PSI",
        Q.F_JS: "JS distance",
        Q.F_WASSERSTEIN: "Wasserstein",
        "importance": "importance",
        "impact": "impact",
        Q.F_N_CUR: "window n",
        Q.F_N_REF: "reference n",
        "time": "window end",
    }
    t = latest.copy()
    t["verdict"] = Q.col(t, Q.F_DRIFT, False).fillna(False).astype(bool)
    t["test"] = Q.col(t, "detector", "").map(ui.test_name)
    t["rule"] = _rules(t)
    t["band"] = [ui.band_text(r) for r in t.to_dict("records")]
    present = [c for c in cols if c in t]
    cfg = {
        "verdict": st.column_config.CheckboxColumn("drift", help="the judged value left its band (see rule and band)"),
        "effect": st.column_config.NumberColumn(
            format="%.3f", help="normed Wasserstein (numeric) or Jensen-Shannon (categorical) distance"
        ),
        "effect floor": st.column_config.NumberColumn(format="%.2f"),
        "effect band": st.column_config.NumberColumn(
            format="%.3g",
            help="the effect of the reference's own chunks "
            "(each against the rest), upper end: a drifting window's "
            "effect is above it",
        ),
        "p-value": st.column_config.NumberColumn(format="%.3g"),
        "statistic": st.column_config.NumberColumn(format="%.4g"),
        "threshold": st.column_config.NumberColumn(format="%.3g"),
        "PSI": st.column_config.NumberColumn(format="%.3f"),
        "JS distance": st.column_config.NumberColumn(format="%.3f"),
        "Wasserstein": st.column_config.NumberColumn(format="%.3g"),
        "impact": st.column_config.NumberColumn(format="%.3f"),
        "importance": st.column_config.NumberColumn(
            format="percent",
            help="share of the model's dependence on its inputs (mutual information with the output, dw_impact)",
        ),
        "window end": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm"),
    }
    # lazy tabs: only the open tab's table is built and drawn
    by_drift, by_impact = st.tabs(["Ranked by drift", "Ranked by impact"], key="dw_rank_tab", on_change="rerun")
    if by_drift.open is not False:
        with by_drift:
            ui.table(t.sort_values("drift_rank")[present].rename(columns=cols), column_config=cfg)
            st.caption("Drifting features first, then by p-value (most significant first).")
    if by_impact.open:
        with by_impact:
            ui.table(t.sort_values("impact_rank")[present].rename(columns=cols), column_config=cfg)
            has_imp = "importance" in t and t["importance"].notna().any()
            st.caption(
                "By the size of the shift rather than its significance: impact = Jensen-Shannon distance "
                "(else PSI)"
                + (
                    " × the feature's importance to the model output (its share of the mutual "
                    "information between inputs and predictions, from the reference)"
                    if has_imp
                    else "; no feature importance has been computed for this model yet"
                )
                + ". Large windows make small shifts significant; this ranking shows which shifts matter."
            )


def _ranked(latest: pd.DataFrame) -> list[str]:
    return latest.sort_values("drift_rank")["feature"].drop_duplicates().tolist()


def _chosen_feature(ranked: list[str]) -> str:
    """The feature the detail will show (before its select box is drawn, so its queries can
    run beside the heatmap's): the select box's value, else the URL's, else the top one."""
    ss = st.session_state
    for v in (ss.get("dw_feature_sel"), ss.get("dw_feature")):
        if v in ranked:
            return v
    return ranked[0]


def _detail_queries(ctx: ui.Ctx, feature: str) -> dict[str, tuple]:
    return {"hist": (D.histogram, (ctx.conn, ctx.scope, feature))}


def _distribution(ctx: ui.Ctx, feature: str, hist: dict[str, pd.DataFrame]) -> None:
    """Reference vs current bins, and what privacy did to them (issue 8: data minimisation)."""
    ref, cur = hist["reference"], hist["current"]
    noised_pts = [h for h in (cur, ref) if len(h) and bool(h["noised"].iloc[0])]
    eps = next((float(h["epsilon"].iloc[0]) for h in noised_pts if pd.notna(h["epsilon"].iloc[0])), None)
    spec = privacy.feature_specs(ctx.settings.monitors, ctx.model).get(feature)
    pub = privacy.publication(spec, noised=bool(noised_pts), epsilon=eps)
    note = pub.note()
    if len(ref) or len(cur):
        when = ui.fmt_time(cur["time"].iloc[0]) if len(cur) else "—"
        st.altair_chart(
            charts.distributions(ref, cur, title=f"{feature}: reference vs window ending {when}"), width="stretch"
        )
        if note:
            st.caption(
                f":material/lock: **{feature}**: histogram {note}. Counts carry Laplace noise at this ε per "
                "published histogram; bins are unnamed, so no value leaks through an edge or a label."
            )
        if not len(ref):
            st.caption("No reference histogram stored for this feature yet.")
    elif pub.status == "withheld":
        st.info(
            f":material/lock: **{feature}**: histogram {note}. The monitor config marks it sensitive with "
            "`dp_epsilon: null`; its drift tests are still shown above.",
            icon=":material/visibility_off:",
        )
    else:
        ui.empty(
            f"No histograms stored for `{feature}`" + (f" (sensitive: {note})" if note else "") + ".",
            "The worker writes bin counts with every window once the reference is complete; a sensitive "
            "feature with `dp_epsilon: null` in the monitor config never gets any.",
        )


def _history(ctx: ui.Ctx, feature: str) -> None:
    """The feature's p-value and effect sizes over time and its last windows, built only when
    the expander is opened (each chart costs the browser a fixed ~0.2-0.5 s to draw)."""
    exp = st.expander(
        f"History of `{feature}`: p-value and effect sizes over time, the last 20 windows",
        key="dw_feature_history",
        on_change="rerun",
        icon=":material/history:",
    )
    if not exp.open:
        return
    with exp:
        f = D.fetch(
            series=(D.drift_feature_series, (ctx.conn, ctx.scope, feature)),
            win=(D.drift_feature_windows, (ctx.conn, ctx.scope, feature)),
        )
        series, win = f["series"], f["win"]
        judged = str(win[Q.F_JUDGED].dropna().iloc[0]) if Q.F_JUDGED in win and win[Q.F_JUDGED].notna().any() else ""
        left, right = st.columns(2)
        with left:
            if len(series) and series[Q.F_P_VALUE].notna().any():
                s = series.dropna(subset=[Q.F_P_VALUE]).copy()
                s[Q.F_P_VALUE] = s[Q.F_P_VALUE].clip(lower=1e-300)
                thr = ui.median(s[Q.F_THRESHOLD])
                st.altair_chart(
                    charts.lines(
                        s,
                        Q.F_P_VALUE,
                        log=True,
                        y_title="p-value (log)",
                        band=_band_of(series, judged, Q.F_P_VALUE),
                        title=f"{feature}: smallest p-value per bucket",
                        rule=thr,
                        rule_label=f"threshold {ui.fmt_num(thr, '.3g')}",
                    ),
                    width="stretch",
                )
            elif len(series):
                thr = ui.median(series[Q.F_THRESHOLD])
                st.altair_chart(
                    charts.lines(
                        series,
                        Q.F_STATISTIC,
                        y_title="statistic",
                        band=_band_of(series, judged, Q.F_STATISTIC),
                        title=f"{feature}: largest statistic per bucket",
                        rule=thr,
                    ),
                    width="stretch",
                )
        eff = [c for c in Q.EFFECT_FIELDS if c in series and series[c].notna().any()] if len(series) else []
        with right:
            if eff:
                long = series.melt(
                    id_vars=["time"], value_vars=eff, var_name="effect size", value_name="value"
                ).dropna()
                st.altair_chart(
                    charts.lines(
                        long,
                        "value",
                        color="effect size",
                        y_title="effect size",
                        title=f"{feature}: effect sizes (mean per bucket)",
                    ),
                    width="stretch",
                )
        st.markdown("**Latest windows of this feature** (every field as the worker wrote it)")
        if len(win):
            show = [
                c
                for c in (
                    "time",
                    "version",
                    "detector",
                    Q.F_DRIFT,
                    Q.F_STATISTIC,
                    Q.F_P_VALUE,
                    Q.F_THRESHOLD,
                    Q.F_PSI,
                    Q.F_JS,
                    Q.F_WASSERSTEIN,
                    Q.F_N_CUR,
                    Q.F_N_REF,
                )
                if c in win
            ]
            ui.table(
                win[show],
                column_config={
                    "time": st.column_config.DatetimeColumn("window end", format="YYYY-MM-DD HH:mm:ss"),
                    Q.F_P_VALUE: st.column_config.NumberColumn(format="%.3g"),
                },
            )
        else:
            st.caption("No window of this feature in the range.")


def _band_of(series: pd.DataFrame, judged: str, value: str) -> tuple[str, str] | None:
    """The stored threshold band to shade under ``value``'s line, when the verdicts were judged
    on ``value`` and the worker wrote a band (detectors/thresholds.py)."""
    has = any(c in series and series[c].notna().any() for c in (Q.F_BAND_LOWER, Q.F_BAND_UPPER))
    return (Q.F_BAND_LOWER, Q.F_BAND_UPPER) if has and judged == value else None


def _detail(ctx: ui.Ctx, latest: pd.DataFrame, pre: str, early: D.Fetched) -> None:
    ranked = _ranked(latest)
    want = st.session_state.get("dw_feature")
    idx = ranked.index(want) if want in ranked else 0

    def _pick() -> None:
        ui.set_param("feature", st.session_state["dw_feature_sel"])

    feature = st.selectbox("Feature", ranked, index=idx, key="dw_feature_sel", on_change=_pick)
    if st.session_state.get("dw_feature") != feature:
        ui.set_param("feature", feature)
    f = early if feature == pre else D.fetch(**_detail_queries(ctx, feature))
    rows = latest[latest["feature"] == feature]
    for _, row in rows.iterrows():
        st.markdown(verdict_text(row))
        # one line rather than six metric widgets (each widget is drawing time in the browser)
        st.markdown(
            " · ".join(
                [
                    f"**Statistic** {ui.fmt_num(row.get(Q.F_STATISTIC), '.4g')} ({ui.test_name(row.get('detector'))})",
                    f"**p-value** {ui.fmt_p(row.get(Q.F_P_VALUE))}",
                    f"**threshold** {ui.fmt_num(row.get(Q.F_THRESHOLD), '.3g')}",
                    f"**PSI** {ui.fmt_num(row.get(Q.F_PSI), '.3f')}",
                    f"**JS distance** {ui.fmt_num(row.get(Q.F_JS), '.3f')}",
                    f"**Wasserstein** {ui.fmt_num(row.get(Q.F_WASSERSTEIN), '.3g')}",
                ]
            )
        )

    _distribution(ctx, feature, f["hist"])
    _history(ctx, feature)
    ui.links(ctx, [("quality", f"Data quality of {ctx.model}"), ("performance", "Performance"), ("alerts", "Alerts")])


def _heatmap(ctx: ui.Ctx, heat: pd.DataFrame, order: list[str], title: str) -> None:
    heat = heat[heat["feature"].isin(order)]
    if not len(heat):
        return
    bucket = ctx.rng.heat_bucket
    st.altair_chart(
        charts.heatmap(
            heat,
            "share",
            bucket_s=Q.bucket_seconds(bucket),
            order=order,
            legend="share of windows drifting",
            start=ctx.data_start,
            now=pd.Timestamp.now(tz="UTC"),
            title=f"{title} ({bucket} buckets): share of windows whose test found drift",
            tooltip=[
                alt.Tooltip("share:Q", title="share of windows drifting", format=".0%"),
                alt.Tooltip("p_min:Q", title="smallest p-value", format=".3g"),
            ],
        ),
        width="stretch",
    )


def render(ctx: ui.Ctx) -> None:
    f = D.fetch(
        latest=(D.drift_latest, (ctx.conn, ctx.scope)),
        summ=(D.drift_summary_latest, (ctx.conn, ctx.scope)),
        series=(D.drift_summary_series, (ctx.conn, ctx.scope)),
        counts=(D.drift_counts, (ctx.conn, ctx.scope)),
    )
    latest = f["latest"]
    if not len(latest):
        ui.empty(
            f"No drift results for `{ctx.model}` in the {ctx.range_label}.",
            "Drift tests start once the model's reference is complete (the first N events, a reference file, or "
            "the previous window, as its monitor config says), then run on every window. Widen the time range, "
            "or check that the worker is running.",
        )
        return
    rows = Q.heatmap_rows(latest, f["counts"])
    top = rows[: Q.HEATMAP_TOP]
    pre = _chosen_feature(_ranked(latest))
    # the heatmap's and the feature detail's queries at once
    g = D.fetch(heat=(D.drift_heatmap, (ctx.conn, ctx.scope, tuple(top))), **_detail_queries(ctx, pre))
    _summary(ctx, latest, f["summ"])

    summ = f["series"]
    st.subheader("Drift over time")
    if len(summ):
        since = Q.drifting_since(summ)
        st.altair_chart(
            charts.lines(
                summ,
                Q.F_SHARE_DRIFTED,
                y_title="share drifting",
                fmt=".1%",
                height=160,
                rules=ui.rule_thresholds(ctx, "drift_summary.share_drifted"),
                since=(since, f"drifting since {since:%H:%M:%S}") if since is not None else None,
                title="Share of features drifting (mean per bucket)",
            ),
            width="stretch",
        )
        if since is not None:
            st.caption(
                f"Drifting since **{ui.fmt_time(since)}** (the first bucket of the current run of buckets "
                "with drifting features). Dashed lines: the thresholds of the model's alert rules."
            )
    more = len(rows) > len(top)
    _heatmap(
        ctx, g["heat"], top, f"The {len(top)} features with the most drifting windows" if more else "Feature × time"
    )
    if more:
        exp = st.expander(
            f"All {len(rows)} features × time", key="dw_heat_all", on_change="rerun", icon=":material/grid_on:"
        )
        if exp.open:
            with exp:
                _heatmap(ctx, D.drift_heatmap(ctx.conn, ctx.scope), rows, f"All {len(rows)} features")
    st.subheader("Features")
    _tables(ctx, latest)
    st.subheader("Feature detail")
    _detail(ctx, latest, pre, g)


ctx = ui.current()
ui.body(
    ctx,
    render,
    title="Data drift",
    caption="Which inputs moved away from the reference, how significantly and by how much.",
)
