"""Altair charts the pages draw. Pure functions: DataFrame in, chart out.

Times are UTC; every chart has tooltips with the exact numbers behind a mark, so
a verdict can be checked without leaving the page.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import altair as alt
import pandas as pd

alt.data_transformers.disable_max_rows()

C = TypeVar("C", bound=alt.TopLevelMixin)


def unvalidated(chart: C) -> C:
    """Skip Altair's JSON-schema validation when Streamlit serializes the chart.

    Validation walks the whole Vega-Lite schema for every chart on every page view
    (~50 ms each, far more on a busy machine); the builders here are validated once by
    the tests (``tests/dashboard/test_charts.py``) instead.
    """
    to_dict = chart.to_dict

    def _to_dict(*args: Any, validate: bool = False, **kw: Any) -> dict[str, Any]:
        return to_dict(*args, validate=validate, **kw)

    object.__setattr__(chart, "to_dict", _to_dict)
    return chart

TIME_AXIS = alt.Axis(title=None, format="%b %d %H:%M", labelAngle=0)
HEIGHT = 240


def heatmap(
    df: pd.DataFrame,
    value: str,
    *,
    bucket_s: int,
    order: Sequence[str] | None = None,
    title: str = "",
    legend: str = "",
    tooltip: Sequence[alt.Tooltip] = (),
    domain: tuple[float, float] = (0.0, 1.0),
    hot: str = "#c62828",
) -> alt.Chart:
    """Feature × time cells coloured by ``value`` from pale grey (0) to ``hot``.

    ``time`` is a bucket's start and ``bucket_s`` its length: each cell spans its
    bucket (a rect without an end would stretch over the whole axis).
    """
    df = df.assign(end=df["time"] + pd.Timedelta(seconds=bucket_s))
    n = len(order) if order is not None else df["feature"].nunique()
    scale = alt.Scale(domain=list(domain), range=["#eef0f3", hot], clamp=True, interpolate="rgb")
    return unvalidated(
        alt.Chart(df, title=title)
        .mark_rect()
        .encode(
            x=alt.X("time:T", axis=TIME_AXIS),
            x2="end:T",
            y=alt.Y("feature:N", sort=list(order) if order is not None else None, title=None,
                    axis=alt.Axis(labelOverlap=False, labelLimit=160)),
            color=alt.Color(f"{value}:Q", scale=scale, title=legend or value),
            tooltip=[alt.Tooltip("feature:N"), alt.Tooltip("time:T", format="%Y-%m-%d %H:%M UTC", title="from"),
                     *tooltip],
        )
        .properties(height=alt.Step(20 if n <= 30 else 16))
    )


def lines(
    df: pd.DataFrame,
    y: str,
    *,
    color: str | None = None,
    title: str = "",
    y_title: str = "",
    log: bool = False,
    fmt: str = ".3g",
    rule: float | None = None,
    rule_label: str = "",
    dash: str | None = None,
    height: int = HEIGHT,
) -> alt.LayerChart | alt.Chart:
    """Lines over ``time`` (one per ``color`` value), optionally a horizontal threshold rule."""
    scale = alt.Scale(type="log") if log else alt.Scale(zero=False)
    enc: dict = {
        "x": alt.X("time:T", axis=TIME_AXIS),
        "y": alt.Y(f"{y}:Q", scale=scale, title=y_title or y),
        "tooltip": [alt.Tooltip("time:T", format="%Y-%m-%d %H:%M UTC"), alt.Tooltip(f"{y}:Q", format=fmt)],
    }
    if color:
        enc["color"] = alt.Color(f"{color}:N", title=None)
        enc["tooltip"].insert(0, alt.Tooltip(f"{color}:N"))
    if dash:
        enc["strokeDash"] = alt.StrokeDash(f"{dash}:N", title=None)
        enc["tooltip"].insert(0, alt.Tooltip(f"{dash}:N"))
    base = alt.Chart(df).mark_line(point=len(df) < 60).encode(**enc).properties(height=height)
    if rule is None:
        return unvalidated(base.properties(title=title))
    r = (
        alt.Chart(pd.DataFrame({"y": [rule], "label": [rule_label or f"threshold {rule:.3g}"]}))
        .mark_rule(color="#d62728", strokeDash=[4, 4])
        .encode(y="y:Q", tooltip=[alt.Tooltip("label:N", title="")])
    )
    return unvalidated(alt.layer(base, r).properties(title=title))


def lines_with_band(df: pd.DataFrame, y: str, lower: str, upper: str, *, color: str, band_of: str,
                    title: str = "", y_title: str = "", fmt: str = ".3g") -> alt.LayerChart | alt.Chart:
    """:func:`lines` plus a shaded band from ``lower`` to ``upper`` under the rows whose ``color`` is
    ``band_of`` (e.g. the estimate's sampling band beside the realized line)."""
    base = lines(df, y, color=color, title="", y_title=y_title, fmt=fmt)
    rows = df[(df[color] == band_of) & df[lower].notna() & df[upper].notna()] if lower in df and upper in df else df.iloc[0:0]
    if not len(rows):
        return unvalidated(base.properties(title=title))
    band = alt.Chart(rows).mark_area(opacity=0.2).encode(
        x=alt.X("time:T", axis=TIME_AXIS), y=alt.Y(f"{lower}:Q"), y2=alt.Y2(f"{upper}:Q"),
        color=alt.Color(f"{color}:N", title=None),
        tooltip=[alt.Tooltip("time:T", format="%Y-%m-%d %H:%M UTC"), alt.Tooltip(f"{lower}:Q", format=fmt),
                 alt.Tooltip(f"{upper}:Q", format=fmt)])
    return unvalidated(alt.layer(band, base).properties(title=title))


def bars_over_time(df: pd.DataFrame, y: str, color: str, *, title: str = "", y_title: str = "") -> alt.Chart:
    """Stacked bars per time bucket (e.g. dead letters by reason)."""
    return unvalidated(
        alt.Chart(df, title=title)
        .mark_bar()
        .encode(
            x=alt.X("time:T", axis=TIME_AXIS),
            y=alt.Y(f"sum({y}):Q", title=y_title or y),
            color=alt.Color(f"{color}:N", title=None),
            tooltip=[alt.Tooltip(f"{color}:N"), alt.Tooltip("time:T", format="%Y-%m-%d %H:%M UTC"),
                     alt.Tooltip(f"sum({y}):Q", title=y_title or y)],
        )
        .properties(height=HEIGHT)
    )


def distributions(ref: pd.DataFrame, cur: pd.DataFrame, *, title: str = "") -> alt.Chart:
    """Reference vs current share of each bin, side by side."""
    parts = []
    if len(ref):
        parts.append(ref.assign(series="reference"))
    if len(cur):
        parts.append(cur.assign(series="current window"))
    df = pd.concat(parts, ignore_index=True)
    order = (
        df.drop_duplicates("bin").sort_values("order")["bin"].tolist() if "order" in df else None
    )
    return unvalidated(
        alt.Chart(df, title=title)
        .mark_bar()
        .encode(
            x=alt.X("bin:N", sort=order, title=None, axis=alt.Axis(labelAngle=-45, labelOverlap=False)),
            xOffset=alt.XOffset("series:N", sort=["reference", "current window"]),
            y=alt.Y("share:Q", title="share of the window", axis=alt.Axis(format="%")),
            color=alt.Color("series:N", title=None, sort=["reference", "current window"],
                            scale=alt.Scale(range=["#9aa7b8", "#d62728"])),
            tooltip=[alt.Tooltip("series:N"), alt.Tooltip("bin:N"), alt.Tooltip("count:Q"),
                     alt.Tooltip("share:Q", format=".2%")],
        )
        .properties(height=HEIGHT)
    )


def timeline(df: pd.DataFrame, *, row: str, title: str = "", tooltip: Sequence[str] = ()) -> alt.Chart:
    """One row per alert, a bar per pending/firing period (``start``..``end``), firing red,
    pending orange; periods still open end at "now" and are drawn lighter."""
    return unvalidated(
        alt.Chart(df, title=title)
        .mark_bar(height=14, cornerRadius=2)
        .encode(
            x=alt.X("start:T", axis=TIME_AXIS),
            x2="end:T",
            y=alt.Y(f"{row}:N", title=None, axis=alt.Axis(labelLimit=320)),
            color=alt.Color("status:N", title=None,
                            scale=alt.Scale(domain=["firing", "pending"], range=["#d62728", "#ff9f1c"])),
            opacity=alt.condition("datum.ongoing", alt.value(0.6), alt.value(1.0)),
            tooltip=[alt.Tooltip("start:T", format="%Y-%m-%d %H:%M UTC"), alt.Tooltip("end:T", format="%Y-%m-%d %H:%M UTC"),
                     *[alt.Tooltip(t) for t in tooltip]],
        )
        .properties(height=alt.Step(28))
    )
