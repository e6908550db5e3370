"""The false-alarm budget: allocation by hand, and the false alarms it buys on stationary data."""

from __future__ import annotations

import numpy as np
import pytest

from detectors.budget import (
    MAX_LEVEL,
    ModelLoad,
    allocate,
    expected_alarms,
    per_day,
    window_level,
    windows_per_day,
)
from detectors.correction import correct


def test_windows_per_day_from_the_window_or_the_rate():
    assert windows_per_day(size_seconds=300) == pytest.approx(288)
    assert windows_per_day(size_events=1000, events_per_second=50) == pytest.approx(86_400 * 50 / 1000)
    assert windows_per_day(size_events=1000) is None  # the rate is not known yet


def test_per_day_and_bad_periods():
    assert per_day(14, "week") == pytest.approx(2.0)
    with pytest.raises(ValueError, match="period"):
        per_day(1, "month")
    with pytest.raises(ValueError, match="> 0"):
        per_day(0, "day")


def test_allocation_by_hand_spends_exactly_the_budget():
    loads = [ModelLoad("a", 288.0, 1, 20), ModelLoad("b", 4320.0, 12, 5), ModelLoad("c", None, 1, 3, "unknown")]
    lines = allocate(3.0, loads)
    total_families = 1 + 12 + 1
    assert [line.share_per_day for line in lines] == pytest.approx([3 / 14, 3 * 12 / 14, 3 / 14])
    a, b, c = lines
    assert a.window_level == pytest.approx(3.0 / (total_families * 288))
    assert a.test_level == pytest.approx(a.window_level / 20)
    assert b.window_level == pytest.approx(3.0 / (total_families * 4320))
    assert c.window_level is None and c.test_level is None
    # the models whose rates are known spend their shares exactly
    assert expected_alarms(lines) == pytest.approx(a.share_per_day + b.share_per_day)


def test_levels_are_capped():
    assert window_level(1000.0, 1, 24) == MAX_LEVEL


def test_a_budget_buys_that_many_false_alarms_on_stationary_data():
    """Simulated: 2 alarms/day over 3 models; uniform p-values (no drift) for 200 days."""
    rng = np.random.default_rng(0)
    lines = allocate(2.0, [ModelLoad("a", 288.0, 1, 10), ModelLoad("b", 96.0, 3, 4), ModelLoad("c", 24.0, 1, 30)])
    days = 200
    alarms = 0
    for line in lines:
        n = int(line.windows_per_day * days) * line.families
        p = rng.random((n, line.tests))
        hits = p.min(axis=1) < line.window_level / line.tests  # Bonferroni within the family, by hand
        assert correct(p[0], line.window_level, "bonferroni").any == hits[0]  # the detectors' rule agrees
        alarms += int(hits.sum())
    per_day_seen = alarms / days
    assert per_day_seen == pytest.approx(2.0, rel=0.15)  # Poisson: 400 expected, sd 20


def test_fixed_online_contributions_come_off_the_budget_first():
    from detectors.budget import BudgetExhausted, ModelLoad, allocate, expected_alarms, online_per_day

    on = online_per_day(2, 10_000.0, 0.5)  # two features, 43,200 events a day, one false alarm per 10,000 each
    assert on == pytest.approx(2 * 43_200 / 10_000)
    assert online_per_day(0, 10_000.0, None) == 0.0 and online_per_day(1, 10_000.0, None) is None
    lines = allocate(10.0, [ModelLoad("a", 100.0, 3, 4, fixed_per_day=on), ModelLoad("b", 50.0, 1, 2)])
    left = 10.0 - on
    assert lines[0].window_level == pytest.approx(left / (4 * 100.0))
    assert lines[1].window_level == pytest.approx(left / (4 * 50.0))
    assert sum(line.share_per_day for line in lines) == pytest.approx(left)
    assert expected_alarms(lines) == pytest.approx(10.0)  # families' share + the online detectors' part
    with pytest.raises(BudgetExhausted, match=r"online detectors alone expect 8.64"):
        allocate(5.0, [ModelLoad("a", 100.0, 3, 4, fixed_per_day=on)])
