"""Altair charts the pages draw. Pure functions: DataFrame in, chart out.

Times are UTC; every chart has tooltips with the exact numbers behind a mark, so
a verdict can be checked without leaving the page.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final, TypeVar

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

    def _to_dict(validate: bool = False, **kw: Any) -> dict[str, Any]:
        return to_dict(validate, **kw)

    object.__setattr__(chart, "to_dict", _to_dict)
    return chart


#: tick labels per tick alignment (Vega's multi-format): the times in 24-hour UTC, as every
#: caption and tooltip says them (Vega's default "%I:%M" labelled 15:01 as "03:01" and 15:00
#: as "03 PM"), days as "07 Dec"
TIME_LABELS = {
    "milliseconds": "%H:%M:%S.%L",
    "seconds": "%H:%M:%S",
    "minutes": "%H:%M",
    "hours": "%H:%M",
    "date": "%d %b",
    "week": "%d %b",
    "month": "%b %Y",
    "quarter": "%b %Y",
    "year": "%Y",
}
#: multi-scale time labels, never overlapping
TIME_AXIS = alt.Axis(
    title=None, labelAngle=0, labelOverlap="greedy", labelFlush=True, format=TIME_LABELS, formatType="time"
)
HEIGHT = 240
#: one distinct colour per series (Streamlit's theme would give two models two blues)
PALETTE: Final = "tableau10"
THRESHOLD_COLOR = "#d62728"
#: a line style per series besides its colour: the first solid, the others dashed/dotted, so a
#: series drawn over another with the same values leaves the one under it visible in its gaps
DASHES: list[list[float]] = [[1, 0], [7, 4], [2, 3], [10, 3, 2, 3], [4, 2], [1, 4], [12, 5], [6, 2, 2, 2]]


def axis_format(fmt: str) -> str:
    """Tick labels for a tooltip format: percentages stay percentages, numbers get at most
    four significant digits and no trailing zeros (never "200.40079164520…").

    >>> axis_format(".2%"), axis_format(".3g"), axis_format(",.1f")
    ('.3~%', ',.4~g', ',.4~g')
    """
    return ".3~%" if fmt.endswith("%") else ",.4~g"


def _flat(values: pd.Series) -> bool:
    """True when a series has one value (or none): a scale that leaves out zero would then
    zoom into floating-point noise and label every tick with the same long number."""
    v = pd.to_numeric(values, errors="coerce").dropna()
    if not len(v):
        return True
    lo, hi = float(v.min()), float(v.max())
    return hi - lo <= 1e-9 * max(1.0, abs(hi), abs(lo))


def overlapping(df: pd.DataFrame, y: str, series: str, tolerance: float = 0.005) -> list[list[str]]:
    """Groups of series whose lines lie on top of each other: at (nearly) every time both
    have a value, they differ by at most ``tolerance`` of the chart's y range (under ~1 px
    of a 240 px chart). A legend cannot show that on its own: the line drawn last hides
    the others, and two models at the same 200 events/s read as one.

    >>> df = pd.DataFrame({"time": [1, 2, 1, 2, 1, 2], "m": list("aabbcc"), "v": [200, 200, 200, 200, 5, 7]})
    >>> overlapping(df, "v", "m")
    [['a', 'b']]
    """
    if series not in df or y not in df or "time" not in df:
        return []
    wide = (
        df.assign(_v=pd.to_numeric(df[y], errors="coerce"))
        .dropna(subset=["_v"])
        .pivot_table(index="time", columns=series, values="_v", aggfunc="mean")
    )
    if wide.shape[1] < 2:
        return []
    span = float(wide.max().max() - wide.min().min())
    tol = tolerance * span if span > 0 else 1e-12
    names = [str(c) for c in wide.columns]
    groups: list[list[str]] = []
    placed: set[str] = set()
    for i, a in enumerate(wide.columns):
        if names[i] in placed:
            continue
        group = [names[i]]
        for j in range(i + 1, len(names)):
            b = wide.columns[j]
            both = wide[[a, b]].dropna()
            if names[j] not in placed and len(both) and ((both[a] - both[b]).abs() <= tol).mean() >= 0.9:
                group.append(names[j])
        if len(group) > 1:
            placed.update(group)
            groups.append(group)
    return groups


def overlap_note(groups: list[list[str]], width: int = 34) -> list[str]:
    """The chart's subtitle lines for :func:`overlapping` groups (none when no group).

    Short lines: a subtitle does not wrap, and a chart in half of the page at 1,024 px has
    room for ~40 characters of it (Vega cuts the rest with "…").

    >>> overlap_note([["a", "b"], ["c", "d", "e"]])
    ['lines on top of each other:', 'a = b', 'c = d = e']
    """
    if not groups:
        return []
    out = ["lines on top of each other:"]
    for g in groups:
        line = ""
        for name in g:
            part = name if not line else f" = {name}"
            if line and len(line) + len(part) > width:
                out.append(line)
                line = f"= {name}"
            else:
                line += part
        out.append(line)
    return out


def _threshold_rules(rules: Sequence[tuple[float, str]]) -> alt.Chart:
    df = pd.DataFrame({"y": [r[0] for r in rules], "label": [r[1] for r in rules]})
    return (
        alt.Chart(df)
        .mark_rule(color=THRESHOLD_COLOR, strokeDash=[4, 4], strokeWidth=1.5)
        .encode(y="y:Q", tooltip=[alt.Tooltip("label:N", title="")])
    )


def _band(df: pd.DataFrame, y: str, lower: str, upper: str, log: bool) -> alt.Chart:
    """The shaded band a value was judged against, per time bucket; an unbounded side reaches
    to the values' own extreme, so the band shows where the line may go without drifting."""
    lo = pd.to_numeric(df[lower], errors="coerce") if lower in df else pd.Series(float("nan"), index=df.index)
    hi = pd.to_numeric(df[upper], errors="coerce") if upper in df else pd.Series(float("nan"), index=df.index)
    v = pd.to_numeric(df[y], errors="coerce")
    floor = float(v.min()) if log else min(0.0, float(v.min()))
    d = pd.DataFrame({"time": df["time"], "band_from": lo.fillna(floor), "band_to": hi.fillna(float(v.max()))})
    d = d[lo.notna() | hi.notna()]
    if log:
        d = d.assign(band_from=d["band_from"].clip(lower=1e-300), band_to=d["band_to"].clip(lower=1e-300))
    return (
        alt.Chart(d)
        .mark_area(color=THRESHOLD_COLOR, opacity=0.08, interpolate="step-after")
        .encode(
            x="time:T",
            y="band_from:Q",
            y2="band_to:Q",
            tooltip=[
                alt.Tooltip("band_from:Q", title="band from", format=".3g"),
                alt.Tooltip("band_to:Q", title="band to", format=".3g"),
            ],
        )
    )


def _since_rule(at: pd.Timestamp, label: str) -> alt.Chart:
    """A vertical line where a change started (its label in the tooltip: a text mark near the
    right edge would stretch the chart past its frame and cut its title; pages say it in words)."""
    df = pd.DataFrame({"time": [at], "label": [label]})
    return (
        alt.Chart(df)
        .mark_rule(color=THRESHOLD_COLOR, strokeWidth=2)
        .encode(x="time:T", tooltip=[alt.Tooltip("label:N", title="")])
    )


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
    start: pd.Timestamp | None = None,
    now: pd.Timestamp | None = None,
) -> alt.Chart:
    """Feature × time cells coloured by ``value`` from pale grey (0) to ``hot``.

    ``time`` is a bucket's start and ``bucket_s`` its length: each cell spans its
    bucket (a rect without an end would stretch over the whole axis), cut to ``start``
    (when the data started: a 30-minute cell must not read "since 09:00" for data
    from 09:18) and ``now`` (the current bucket is not over). The tooltip says both ends.
    """
    df = df.assign(end=df["time"] + pd.Timedelta(seconds=bucket_s))
    if start is not None:  # the first bucket starts where the data does, not at the bucket boundary
        df["time"] = df["time"].where(df["time"] >= start, start)
    if now is not None:  # the current bucket ends now
        df["end"] = df["end"].where(df["end"] <= now, now)
    n = len(order) if order is not None else df["feature"].nunique()
    scale = alt.Scale(domain=list(domain), range=["#eef0f3", hot], clamp=True, interpolate="rgb")
    return unvalidated(
        alt.Chart(df, title=title)
        .mark_rect()
        .encode(
            x=alt.X("time:T", axis=TIME_AXIS),
            x2="end:T",
            y=alt.Y(
                "feature:N",
                sort=list(order) if order is not None else None,
                title=None,
                axis=alt.Axis(labelOverlap=False, labelLimit=160),
            ),
            color=alt.Color(f"{value}:Q", scale=scale, title=legend or value),
            tooltip=[
                alt.Tooltip("feature:N"),
                alt.Tooltip("time:T", format="%Y-%m-%d %H:%M:%S UTC", title="from"),
                alt.Tooltip("end:T", format="%Y-%m-%d %H:%M:%S UTC", title="to"),
                *tooltip,
            ],
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
    rules: Sequence[tuple[float, str]] = (),
    dash: str | None = None,
    height: int = HEIGHT,
    zero: bool = False,
    since: tuple[pd.Timestamp, str] | None = None,
    band: tuple[str, str] | None = None,
) -> alt.LayerChart | alt.Chart:
    """Lines over ``time`` (one per ``color`` value, each its own colour), with dashed red
    threshold rules (``rule``/``rule_label``, or several ``rules`` of (value, label)) and
    optionally a vertical marker ``since`` = (time, label) where a change started.

    The y scale leaves out zero (``zero=False``) to show small changes, except for a flat
    series, which gets zero in (a scale around one value labels every tick alike).
    """
    scale = alt.Scale(type="log") if log else alt.Scale(zero=zero or (y in df and _flat(df[y])), nice=True)
    enc: dict[str, Any] = {
        "x": alt.X("time:T", axis=TIME_AXIS),
        "y": alt.Y(
            f"{y}:Q",
            scale=scale,
            title=y_title or y,
            axis=alt.Axis(format=axis_format(fmt), titleLimit=int(height * 0.6), labelOverlap=True),
        ),
        "tooltip": [alt.Tooltip("time:T", format="%Y-%m-%d %H:%M:%S UTC"), alt.Tooltip(f"{y}:Q", format=fmt)],
    }
    note: list[str] = []
    if color:
        domain = sorted(df[color].dropna().astype(str).unique().tolist()) if color in df else None
        enc["color"] = alt.Color(
            f"{color}:N",
            title=None,
            scale=alt.Scale(scheme=PALETTE, domain=alt.Undefined if domain is None else domain),
        )
        enc["tooltip"].insert(0, alt.Tooltip(f"{color}:N"))
        if domain and len(domain) > 1 and not dash:
            # each series its own line style too; the solid first series is drawn first (its rows
            # first), so a dashed one with the same values over it leaves it visible in the gaps
            enc["strokeDash"] = alt.StrokeDash(
                f"{color}:N",
                title=None,
                scale=alt.Scale(domain=domain, range=[DASHES[i % len(DASHES)] for i in range(len(domain))]),
            )
            rank = {v: i for i, v in enumerate(domain)}
            df = df.sort_values(color, key=lambda c: c.astype(str).map(rank), kind="stable")
            note = overlap_note(overlapping(df, y, color))
    if dash:
        enc["strokeDash"] = alt.StrokeDash(f"{dash}:N", title=None)
        enc["tooltip"].insert(0, alt.Tooltip(f"{dash}:N"))
    base = alt.Chart(df).mark_line(point=len(df) < 60).encode(**enc).properties(height=height)
    heading: str | alt.TitleParams = title
    if note:  # said under the title: the legend alone cannot show that one line hides another
        heading = alt.TitleParams(title, subtitle=note, subtitleColor="#6b7280")
    all_rules = [*([(rule, rule_label or f"threshold {rule:.3g}")] if rule is not None else []), *rules]
    all_rules = [(float(v), lab) for v, lab in all_rules if v is not None and pd.notna(v) and (not log or v > 0)]
    layers: list[Any] = [base]
    if band is not None:  # a threshold band that moves with time (columns lower, upper; either may be absent)
        layers.insert(0, _band(df, y, *band, log=log))
    if all_rules:
        layers.append(_threshold_rules(all_rules))
    if since is not None and since[0] is not None and pd.notna(since[0]):
        layers.append(_since_rule(*since))
    if len(layers) == 1:
        return unvalidated(base.properties(title=heading))
    # LayerChart, not alt.layer (which may return a FacetChart): no layer here has a facet channel
    return unvalidated(alt.LayerChart(layer=layers).properties(title=heading))


def lines_with_band(
    df: pd.DataFrame,
    y: str,
    lower: str,
    upper: str,
    *,
    color: str,
    band_of: str,
    title: str = "",
    y_title: str = "",
    fmt: str = ".3g",
    rules: Sequence[tuple[float, str]] = (),
) -> alt.LayerChart | alt.Chart:
    """:func:`lines` plus a shaded band from ``lower`` to ``upper`` under the rows whose ``color`` is
    ``band_of`` (e.g. the estimate's sampling band beside the realized line)."""
    base = lines(df, y, color=color, title=title, y_title=y_title, fmt=fmt, rules=rules)
    rows = (
        df[(df[color] == band_of) & df[lower].notna() & df[upper].notna()]
        if lower in df and upper in df
        else df.iloc[0:0]
    )
    if not len(rows):
        return base
    title = base.title  # with the note when lines lie on top of each other
    band = (
        alt.Chart(rows)
        .mark_area(opacity=0.2)
        .encode(
            x=alt.X("time:T", axis=TIME_AXIS),
            y=alt.Y(f"{lower}:Q"),
            y2=alt.Y2(f"{upper}:Q"),
            color=alt.Color(f"{color}:N", title=None),
            tooltip=[
                alt.Tooltip("time:T", format="%Y-%m-%d %H:%M UTC"),
                alt.Tooltip(f"{lower}:Q", format=fmt),
                alt.Tooltip(f"{upper}:Q", format=fmt),
            ],
        )
    )
    inner = base.copy()
    inner.title = alt.Undefined  # the title goes on the outer layer
    return unvalidated(alt.LayerChart(layer=[band, inner]).properties(title=title))


def bars_over_time(df: pd.DataFrame, y: str, color: str, *, title: str = "", y_title: str = "") -> alt.Chart:
    """Stacked bars per time bucket (e.g. dead letters by reason)."""
    return unvalidated(
        alt.Chart(df, title=title)
        .mark_bar()
        .encode(
            x=alt.X("time:T", axis=TIME_AXIS),
            y=alt.Y(f"sum({y}):Q", title=y_title or y),
            color=alt.Color(f"{color}:N", title=None, scale=alt.Scale(scheme=PALETTE)),
            tooltip=[
                alt.Tooltip(f"{color}:N"),
                alt.Tooltip("time:T", format="%Y-%m-%d %H:%M UTC"),
                alt.Tooltip(f"sum({y}):Q", title=y_title or y),
            ],
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
    order = df.drop_duplicates("bin").sort_values("order")["bin"].tolist() if "order" in df else None
    return unvalidated(
        alt.Chart(df, title=title)
        .mark_bar()
        .encode(
            x=alt.X("bin:N", sort=order, title=None, axis=alt.Axis(labelAngle=-45, labelOverlap=False)),
            xOffset=alt.XOffset("series:N", sort=["reference", "current window"]),
            y=alt.Y("share:Q", title="share of the window", axis=alt.Axis(format="%")),
            color=alt.Color(
                "series:N",
                title=None,
                sort=["reference", "current window"],
                scale=alt.Scale(range=["#9aa7b8", "#d62728"]),
            ),
            tooltip=[
                alt.Tooltip("series:N"),
                alt.Tooltip("bin:N"),
                alt.Tooltip("count:Q"),
                alt.Tooltip("share:Q", format=".2%"),
            ],
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
            color=alt.Color(
                "status:N", title=None, scale=alt.Scale(domain=["firing", "pending"], range=["#d62728", "#ff9f1c"])
            ),
            opacity=alt.condition("datum.ongoing", alt.value(0.6), alt.value(1.0)),
            tooltip=[
                alt.Tooltip("start:T", format="%Y-%m-%d %H:%M UTC"),
                alt.Tooltip("end:T", format="%Y-%m-%d %H:%M UTC"),
                *[alt.Tooltip(t) for t in tooltip],
            ],
        )
        .properties(height=alt.Step(28))
    )
