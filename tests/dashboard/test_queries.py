"""Unit tests of the dashboard's pure query helpers (no InfluxDB: statement text and post-processing)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from dashboard import queries as Q
from dashboard import sample
from detectors import records as R
from detectors.records import Record


def test_literals_escape_quotes_and_backslashes() -> None:
    assert Q.lit("a'b") == "'a\\'b'"
    assert Q.lit("a\\b") == "'a\\\\b'"
    assert Q.ident('x"y') == '"x\\"y"'


def test_scope_where_clause_names_every_filter() -> None:
    s = Q.Scope(Q.TimeRange.last("1h"), model="m'1", version="2", segment=None)
    w = s.where("\"feature\" = 'x'")
    assert w == (
        " WHERE time > now() - 3600s AND \"model\" = 'm\\'1' AND \"version\" = '2'"
        " AND \"segment\" = '' AND \"feature\" = 'x'"
    )
    assert "segment" not in s.where(segment=False)
    assert "time" not in Q.Scope(Q.TimeRange.last("1h"), model="m").where(time_=False)


def test_absolute_time_range() -> None:
    start = datetime(2024, 1, 1, tzinfo=UTC)
    rng = Q.TimeRange.between(start, start + timedelta(days=2))
    assert rng.seconds == 2 * 86400
    end_ns = int((start + timedelta(days=2)).timestamp()) * 1_000_000_000
    assert rng.clause() == f"time > {end_ns - 2 * 86400 * 10**9} AND time <= {end_ns}"
    with pytest.raises(ValueError, match="after its start"):
        Q.TimeRange.between(start, start)
    with pytest.raises(ValueError, match="unknown time range"):
        Q.TimeRange.last("2w")


@pytest.mark.parametrize("seconds", [60, 900, 3600, 86400, 7 * 86400, 30 * 86400, 400 * 86400])
def test_bucket_keeps_charts_under_the_limit(seconds: int) -> None:
    b = Q.pick_bucket(seconds)
    size = Q.bucket_seconds(b)
    if b != Q.BUCKETS[-1][0]:
        assert seconds / size <= Q.MAX_BUCKETS
    smaller = [s for _n, s in Q.BUCKETS if s < size]
    if smaller:  # the next smaller bucket would exceed the limit
        assert seconds / smaller[-1] > Q.MAX_BUCKETS


def test_frame_joins_series_with_their_tags() -> None:
    series = [
        {"name": "dw_drift", "tags": {"feature": "a"}, "columns": ["time", "p"], "values": [[1000, 0.5], [2000, 0.1]]},
        {"name": "dw_drift", "tags": {"feature": "b"}, "columns": ["time", "p"], "values": [[1000, 0.9]]},
    ]
    df = Q.frame(series)
    assert df["feature"].tolist() == ["a", "a", "b"]
    assert df["time"].iloc[1] == pd.Timestamp(2000, unit="ms", tz="UTC")
    assert Q.frame([]).empty
    mean = Q.frame([{"columns": ["time", "mean_score"], "values": [[0, 1.0]]}], strip_prefix="mean_")
    assert list(mean.columns) == ["time", "score"]


def test_rank_features_matches_an_independent_sort() -> None:
    rng = np.random.default_rng(3)
    n = 40
    df = pd.DataFrame(
        {
            "feature": [f"x{i}" for i in range(n)],
            "p_value": rng.uniform(0, 1, n) ** 3,
            "threshold": 0.01,
            "statistic": rng.uniform(0, 1, n),
            "js": rng.uniform(0, 0.5, n),
        }
    )
    df["drift"] = (df["p_value"] < df["threshold"]).astype(float)  # the worker writes 0/1
    ranked = Q.rank_features(df)
    # by drift: drifting first, then ascending p-value
    order = np.lexsort((df["p_value"].to_numpy(), df["drift"].to_numpy() == 0))
    assert ranked["feature"].tolist() == df["feature"].to_numpy()[order].tolist()
    assert ranked["drift_rank"].tolist() == list(range(1, n + 1))
    # by impact: descending JS distance
    by_impact = ranked.sort_values("impact_rank")["feature"].tolist()
    assert by_impact == df.sort_values("js", ascending=False)["feature"].tolist()


def test_impact_uses_importance_when_reported() -> None:
    df = pd.DataFrame(
        {"feature": ["a", "b"], "p_value": [0.5, 0.5], "drift": [0.0, 0.0], "js": [0.2, 0.1], "normalized": [0.1, 0.9]}
    )
    ranked = Q.rank_features(df)
    assert ranked.sort_values("impact_rank")["feature"].tolist() == ["b", "a"]


def test_parse_histogram_of_the_detectors() -> None:
    """The bins the dashboard draws are the ones detectors.histograms wrote (counts, edges, labels)."""
    from detectors.histograms import Histogram, histogram_fields

    x = np.random.default_rng(1).normal(size=5000)
    edges = np.quantile(x, np.linspace(0, 1, 11)[1:-1])  # interior edges, as the reference's quantiles
    counts = np.bincount(np.searchsorted(edges, x, side="right"), minlength=10)
    fields = histogram_fields(Histogram("x", "numeric", counts, edges=edges))
    out = Q.parse_histogram(pd.DataFrame([{"time": pd.Timestamp(0, tz="UTC"), **fields}]))
    assert out["count"].tolist() == counts.tolist()
    np.testing.assert_allclose(out["share"], counts / counts.sum())
    assert out["bin"].iloc[0] == f"< {edges[0]:.4g}" and out["bin"].iloc[-1] == f"≥ {edges[-1]:.4g}"
    assert out["bin"].iloc[1] == f"[{edges[0]:.4g}, {edges[1]:.4g})"
    assert not out["noised"].iloc[0]


def test_parse_categorical_and_noised_histograms() -> None:
    from detectors.histograms import Histogram, histogram_fields

    h = Histogram("c", "categorical", np.array([3, 1, 0]), labels=("red", "blue", "__other__"))
    out = Q.parse_histogram(pd.DataFrame([{"time": 0, **histogram_fields(h)}]))
    assert dict(zip(out["bin"], out["share"])) == {"red": 0.75, "blue": 0.25, "other": 0.0}
    noised = Histogram("c", "numeric", np.array([2, 2]), noised=True, epsilon=1.0)
    out = Q.parse_histogram(pd.DataFrame([{"time": 0, **histogram_fields(noised)}]))
    assert out["bin"].tolist() == ["bin 0", "bin 1"] and bool(out["noised"].iloc[0])
    assert Q.parse_histogram(pd.DataFrame()).empty


NOW = datetime(2024, 5, 1, 12, tzinfo=UTC)


@pytest.mark.parametrize(
    ("row", "status"),
    [
        ({"last_window": NOW, "window_seconds": 300, "active_alerts": 0}, "ok"),
        ({"last_window": NOW, "active_alerts": 2, "critical_alerts": 1}, "critical"),
        ({"last_window": NOW, "active_alerts": 1}, "alerting"),
        ({"last_window": NOW, "drift": True, "n_drifted": 3, "n_features": 50}, "drifting"),
        # no drift summary (drift off, or none written yet): NaN in the overview's frame, not drift
        ({"last_window": NOW, "window_seconds": 300, "drift": float("nan")}, "ok"),
        ({"last_window": NOW, "invalid_rate": 0.2}, "degraded"),
        ({"last_window": NOW - timedelta(hours=2), "window_seconds": 300}, "stale"),
        ({"last_window": NOW - timedelta(minutes=10), "window_seconds": 300}, "ok"),  # < 15 min
        ({"last_window": None}, "no data"),
    ],
)
def test_health_status(row: dict, status: str) -> None:
    got, why = Q.health(row, now=NOW)
    assert got == status
    assert why


def test_health_explains_every_problem() -> None:
    status, why = Q.health(
        {"last_window": NOW, "active_alerts": 1, "drift": True, "n_drifted": 3, "n_features": 50, "invalid_rate": 0.2},
        now=NOW,
    )
    assert status == "alerting"
    assert "1 alert(s) firing" in why and "3/50 features drifting" in why and "20.0% invalid" in why


def _alert_points() -> pd.DataFrame:
    t = pd.to_datetime([0, 60, 120, 180, 240, 300], unit="s", utc=True)
    a = pd.DataFrame(
        {
            "time": t,
            "model": "m",
            "rule": "drift",
            "feature": "x",
            "status": ["pending", "firing", "firing", "resolved", "pending", "firing"],
        }
    )
    b = pd.DataFrame({"time": t[:2], "model": "m", "rule": "missing", "feature": "y", "status": ["firing", "firing"]})
    return pd.concat([a, b], ignore_index=True)


def test_alert_intervals_and_changes() -> None:
    now = pd.Timestamp(1000, unit="s", tz="UTC")
    iv = Q.alert_intervals(_alert_points(), now=now)
    drift = iv[iv["rule"] == "drift"].reset_index(drop=True)
    assert drift["status"].tolist() == ["pending", "firing", "pending", "firing"]
    assert drift.loc[1, "start"] == pd.Timestamp(60, unit="s", tz="UTC")
    assert drift.loc[1, "end"] == pd.Timestamp(180, unit="s", tz="UTC")  # resolved
    assert drift["ongoing"].tolist() == [False, False, False, True]
    assert drift.loc[3, "end"] == now
    missing = iv[iv["rule"] == "missing"]
    assert len(missing) == 1 and bool(missing["ongoing"].iloc[0])
    changes = Q.alert_changes(_alert_points())
    assert sorted(changes[changes["rule"] == "drift"]["status"].tolist()) == sorted(
        ["pending", "firing", "resolved", "pending", "firing"]
    )
    assert len(changes[changes["rule"] == "missing"]) == 1
    assert Q.alert_intervals(pd.DataFrame()).empty


def test_sample_records_drift_only_where_asked() -> None:
    recs = list(sample.sample_records(["a", "b"], n_features=6, windows=20, drift_feature="f_001", drift_from=0.5))
    drift = [r for r in recs if r.measurement == R.DRIFT and r.fields["drift"] == 1]
    late = {r.tags["feature"] for r in drift if r.tags["model"] == "a"}
    assert "f_001" in late
    # the drifting feature drifts in every window from the change point on
    n_windows = sum(1 for r in drift if r.tags["model"] == "a" and r.tags["feature"] == "f_001")
    assert n_windows == 10


def test_sample_records_use_the_worker_field_names() -> None:
    """The synthetic points have the fields the real detectors write (so tests exercise real shapes)."""
    from detectors.histograms import Histogram, histogram_fields

    recs = list(sample.sample_records(["a"], n_features=5, windows=4))
    hist = next(r for r in recs if r.measurement == R.HISTOGRAM and r.tags["feature"] == "f_000")
    real = histogram_fields(Histogram("x", "numeric", np.ones(10, dtype=int), edges=np.arange(9.0)))
    assert set(real) <= set(hist.fields)
    drift = next(r for r in recs if r.measurement == R.DRIFT)
    for name in ("statistic", "p_value", "threshold", "drift", "psi", "js", "n_ref", "n_cur", "rank"):
        assert name in drift.fields
    assert drift.tags[R.T_DETECTOR] in Q.DRIFT_TESTS


def test_to_line_is_the_sinks() -> None:
    rec = Record(R.DRIFT, {"model": "a b,c", "segment": ""}, {"p_value": 0.5, "n": 3, "drift": False}, 7)
    assert sample.to_line(rec) == "dw_drift,model=a\\ b\\,c drift=false,n=3.0,p_value=0.5 7"
    assert sample.to_line(Record(R.DRIFT, {"model": "m"}, {"x": float("nan")}, 1)) == ""
