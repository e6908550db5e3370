"""benchmarks/soak.py: the bookkeeping and the verdict of `bench throughput --soak` (the phase itself runs a
real stack for minutes, not in CI: `driftwatch bench throughput --soak 0.5 --soak-rate 5000 --quick
--skip drift,floor,worker,scale,naive` takes ~3 min on this machine)."""

from __future__ import annotations

import argparse

import numpy as np

from benchmarks import soak, throughput


def _plan(*argv: str) -> throughput.Plan:
    p = argparse.ArgumentParser()
    throughput.add_arguments(p)
    return throughput.Plan.from_args(p.parse_args(list(argv)))


def _series(rss, lag, errors=0, step=10.0):
    return [
        {"t_s": i * step, "rss_mb": float(r), "lag_events": int(g), "error_lines": errors}
        for i, (r, g) in enumerate(zip(rss, lag))
    ]


def test_options_reach_the_plan():
    assert _plan("--soak").soak == 30.0
    plan = _plan("--soak", "0.5", "--soak-rate", "4000", "--soak-sample", "2")
    assert (plan.soak, plan.soak_rate, plan.soak_sample) == (0.5, 4000.0, 2.0)
    assert _plan().soak is None


def test_flat_rss_and_steady_lag_pass():
    n = 180  # 30 min every 10 s
    rng = np.random.default_rng(1)
    rss = np.r_[np.linspace(200, 400, 30), 400 + rng.normal(0, 5, n - 30)]  # grows in warm-up, then flat
    lag = 40_000 + rng.integers(-5000, 5000, n)
    v = soak.verdict(_series(rss, lag), rate=5000.0, duration_s=1800.0)
    assert v["warm_up_s"] == 300.0 and v["samples_after_warm_up"] == n - 30
    assert v["rss_mb_at_warm_up"] == rss[30]
    assert v["rss_change_after_warm_up"] == round(rss[-1] / rss[30] - 1, 3)
    assert v["rss_max_deviation_after_warm_up"] == round(float(np.max(np.abs(rss[30:] / rss[30] - 1))), 3)
    assert v["rss_flat"] and v["lag_bounded"] and v["no_error_line"]
    assert v["lag_events_max"] == lag.max() and v["lag_seconds_max"] == round(lag.max() / 5000, 2)
    # the slope is an ordinary least-squares fit, per minute
    assert abs(v["lag_slope_events_per_min"] - np.polyfit(np.arange(30, n) * 10.0, lag[30:], 1)[0] * 60) < 0.1


def test_growing_rss_growing_lag_and_errors_fail():
    n = 180
    rss = np.linspace(300, 360, n)  # +20 % over the run: a leak
    lag = np.linspace(10_000, 400_000, n)  # the worker falls behind
    v = soak.verdict(_series(rss, lag, errors=2), rate=5000.0, duration_s=1800.0)
    assert v["rss_flat"] is False and v["rss_slope_mb_per_min"] > 1.5
    assert v["lag_bounded"] is False and v["lag_slope_events_per_min"] > 0
    assert v["no_error_line"] is False and v["error_lines"] == 2


def test_drain_samples_do_not_count_for_lag_or_rss():
    s = _series([300] * 10, [1000] * 10)
    s.append({"t_s": 100.0, "rss_mb": 900.0, "lag_events": 10**9, "error_lines": 0, "during_traffic": False})
    v = soak.verdict(s, rate=1000.0, duration_s=90.0)
    assert v["warm_up_s"] == 15.0  # a sixth of a short soak
    assert v["rss_flat"] and v["lag_events_max"] == 1000


def test_error_lines_are_read_incrementally(tmp_path):
    log = tmp_path / "worker.log"
    log.write_text("[x] [INFO] fine\n[x] [ERROR] boom\npartial")
    e = soak.ErrorLines(log)
    assert e.scan() == 1
    with log.open("a") as f:  # the partial line completes, a traceback follows
        f.write(" [CRITICAL] late\nTraceback (most recent call last):\n[x] [WARNING] not an error\n")
    assert e.scan() == 3 and e.scan() == 3
    assert e.examples == ["[x] [ERROR] boom", "partial [CRITICAL] late", "Traceback (most recent call last):"]


def test_summary_carries_the_soak_verdict_and_targets():
    verdict = {"rss_flat": True, "lag_bounded": False, "no_error_line": True, "rss_change_after_warm_up": 0.02}
    report = {"soak": {"minutes": 30.0, "rate_events_per_s": 6000.0, "verdict": verdict, "samples": []}}
    s = throughput.summarise(report, _plan("--soak"))
    assert s["soak_summary"]["rss_change_after_warm_up"] == 0.02 and s["soak_summary"]["minutes"] == 30.0
    t = s["targets"]
    assert t["soak_rss_flat_within_10pct_after_warm_up"] is True
    assert t["soak_lag_bounded"] is False and t["soak_no_error_line"] is True
