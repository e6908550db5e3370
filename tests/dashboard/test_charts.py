"""Every chart builder produces a valid Vega-Lite spec (the dashboard skips validation at run time)."""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd
import pytest

from dashboard import charts


def _valid(chart: alt.TopLevelMixin) -> dict:
    spec = type(chart).to_dict(chart, validate=True)  # the class method: with validation
    assert spec["$schema"].startswith("https://vega.github.io/schema/vega-lite/")
    fast = chart.to_dict()  # what Streamlit calls: same spec, no validation
    assert fast["mark"] == spec["mark"] if "mark" in spec else fast["layer"] == spec["layer"]
    return spec


T = pd.date_range("2024-01-01", periods=6, freq="h", tz="UTC")


def test_heatmap_cells_span_their_bucket() -> None:
    df = pd.DataFrame({"time": np.repeat(T, 2), "feature": ["a", "b"] * 6, "share": np.linspace(0, 1, 12)})
    spec = _valid(charts.heatmap(df, "share", bucket_s=3600, order=["b", "a"], tooltip=[alt.Tooltip("share:Q")]))
    assert spec["encoding"]["x2"]["field"] == "end"
    assert spec["encoding"]["y"]["sort"] == ["b", "a"]
    assert spec["height"] == {"step": 20}


@pytest.mark.parametrize("rule", [None, 0.05])
def test_lines(rule: float | None) -> None:
    df = pd.DataFrame({"time": T, "p_value": np.logspace(-1, -6, 6), "kind": ["x", "y"] * 3})
    spec = _valid(charts.lines(df, "p_value", color="kind", log=True, rule=rule, title="t"))
    if rule is not None:
        assert len(spec["layer"]) == 2


def test_bars_distributions_and_timeline() -> None:
    dl = pd.DataFrame({"time": T, "count": range(6), "reason": ["schema", "not_json"] * 3})
    _valid(charts.bars_over_time(dl, "count", "reason"))
    ref = pd.DataFrame({"bin": ["< 0", "≥ 0"], "order": [0, 1], "count": [5, 5], "share": [0.5, 0.5]})
    cur = ref.assign(count=[2, 8], share=[0.2, 0.8])
    _valid(charts.distributions(ref, cur, title="x"))
    iv = pd.DataFrame(
        {
            "start": T[:2],
            "end": T[2:4],
            "alert": ["m · r", "m · s"],
            "status": ["firing", "pending"],
            "ongoing": [False, True],
        }
    )
    _valid(charts.timeline(iv, row="alert", tooltip=["alert", "status"]))
