"""benchmarks/sigkill.py: the bookkeeping of `bench throughput --sigkill` (the phase itself runs a real stack:
`driftwatch bench throughput --quick --sigkill`, and tests/integration/test_window_checkpoints.py checks the
same behaviour with assertions)."""

from __future__ import annotations

import argparse
import math

from benchmarks import sigkill, throughput


def _plan(*argv: str) -> throughput.Plan:
    p = argparse.ArgumentParser()
    throughput.add_arguments(p)
    return throughput.Plan.from_args(p.parse_args(list(argv)))


def test_options_reach_the_plan():
    plan = _plan("--sigkill", "--sigkill-window", "500000", "--sigkill-rate", "30000")
    assert (plan.sigkill, plan.sigkill_window, plan.sigkill_rate) == (True, 500_000, 30_000.0)
    assert _plan().sigkill is False
    assert _plan("--sigkill", "--sigkill-window", "60s").sigkill_window == "60s"  # event-time windows


def test_a_time_window_plan_kills_mid_window_and_counts_only_the_windows_that_close():
    """``--sigkill-window 60s``: checked against the event times themselves (one per ms, traffic.event_times)."""
    import numpy as np

    from benchmarks.traffic import Traffic, event_times

    base = 1_700_000_017.25
    p = sigkill.time_plan(base, 60.0, 500)
    t = event_times(Traffic(models=["m"], base_time=base), 0, p["events"])
    first_end = (base // 60 + 1) * 60
    assert p["grace"] == 10.0 and p["events"] % 500 == 0
    assert t[p["window_message"] * 500] < first_end <= t[(p["window_message"] + 1) * 500]
    kill = p["kill_at"] * 500  # the message holding the event 60 % into the first whole window
    assert t[kill] <= first_end + 36.0 < t[kill + 500]
    # the windows that close: every end + grace at or before the last event; two whole ones at least
    closed = np.floor((t[-1] - 10.0) / 60) * 60
    assert p["expected"] == int(np.sum(t < closed)) and closed >= first_end + 120


def test_differences_compare_floats_relatively_and_name_missing_points():
    want = {("w", 1): (100, 0, 99, 0.0), ("d", "x0", "ks", 1): (0.5, math.nan)}
    assert sigkill.differences(dict(want), want) == []
    near = {("w", 1): (100, 0, 99, 0.0), ("d", "x0", "ks", 1): (0.5 * (1 + 1e-12), math.nan)}
    assert sigkill.differences(near, want) == []
    off = {("w", 1): (100, 0, 98, 0.0)}
    assert sigkill.differences(off, want) == [
        "missing ('d', 'x0', 'ks', 1)",
        "('w', 1): (100, 0, 98, 0.0) != (100, 0, 99, 0.0)",
    ]


def test_summary_reports_the_reread_and_its_targets():
    report = {
        "sigkill": {
            "window_events": 1_000_000,
            "reread": {"messages": 120, "events": 120_000, "seconds_of_traffic": 6.0},
            "restored": {"events": 480_000},
            "points_equal_fault_free": True,
            "points_compared": 42,
        }
    }
    s = throughput.summarise(report, _plan("--sigkill"))
    head = s["sigkill_summary"]
    assert head["reread_seconds_of_traffic"] == 6.0 and head["restored_events"] == 480_000
    assert "sigkill" not in s  # the phase's own result is not replaced by the summary
    assert s["targets"]["sigkill_reread_s<=10"] is True
    assert s["targets"]["sigkill_points_equal_fault_free"] is True
    report["sigkill"]["reread"]["seconds_of_traffic"] = 11.0
    report["sigkill"]["points_equal_fault_free"] = False
    t = throughput.summarise(report, _plan("--sigkill"))["targets"]
    assert t["sigkill_reread_s<=10"] is False and t["sigkill_points_equal_fault_free"] is False


def test_count_cases_compare_their_rss_with_the_main_run():
    report = {
        "worker": {"rss_mb_at": {"1000000": 550.0, "4000000": 549.0}, "peak_rss_mb": 624.0},
        "cases": {
            "count_1000000": {"rss_mb_at": {"4000000": 394.0}, "peak_rss_mb": 409.0, "events_counted": 1},
            "time_60s": {"rss_mb_at": {"4000000": 700.0}, "peak_rss_mb": 709.0, "events_counted": 1},
        },
    }
    s = throughput.summarise(report, _plan())
    c = s["cases_summary"]["count_1000000"]
    assert (c["rss_vs_main"], c["rss_vs_main_at"], c["peak_rss_vs_main"]) == (0.718, "4000000", 0.655)
    assert s["targets"]["rss_count_1000000<=1.15x_main"] is True
    assert "rss_time_60s<=1.15x_main" not in s["targets"]  # the target is about count windows
    report["cases"]["count_1000000"]["rss_mb_at"]["4000000"] = 640.0
    assert throughput.summarise(report, _plan())["targets"]["rss_count_1000000<=1.15x_main"] is False
