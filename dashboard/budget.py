"""The false-alarm budget as the Alerts page shows it: declared, allocated, spent.

The budget (``alarm_budget`` in the monitor config, :mod:`detectors.budget`) is read
from the config the worker runs with; the alarms spent and the observed event rates
come from InfluxDB over the budget's own period (the last day or week, whatever
range the page shows). Every raised drift verdict counts as spent: driftwatch cannot
tell a false alarm from a true one; on a stream without drift they are all false.

>>> from streams.worker.monitors import parse_monitors
>>> cfg = parse_monitors({"alarm_budget": {"false_alarms": 7, "per": "week"},
...     "models": [{"model_id": "a", "features": [{"name": "x", "kind": "numeric"}],
...                 "window": {"size_seconds": 3600}}]})
>>> spent = pd.DataFrame({"model": ["a"], "alarms": [3], "events_per_s": [2.0]})
>>> v = budget_view(cfg, spent)
>>> v.budget, v.per, v.spent, v.table["allotted"].tolist(), v.table["spent"].tolist()
(7.0, 'week', 3, [7.0], [3])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd

from detectors.budget import SECONDS_PER
from detectors.errors import ConfigurationError

if TYPE_CHECKING:
    from streams.worker.monitors import MonitorsConfig


@dataclass(frozen=True)
class BudgetView:
    """What the page shows: budget per period, alarms spent in the last period, one row per model."""

    budget: float
    per: str
    seconds: int
    spent: int
    expected: float  # false alarms per period the allocation spends on stationary data
    table: pd.DataFrame  # model, allotted, spent, windows/period, rate source, families (by kind), online
    # detectors' expected false alarms per period (deducted from the budget first), level per window/test


def period_seconds(per: str) -> int:
    return int(SECONDS_PER[per])


def budget_view(cfg: MonitorsConfig, spent: pd.DataFrame) -> BudgetView:
    """Join the config's allocation with the alarms spent (``Q.budget_spent``).

    Raises ConfigurationError when ``cfg`` declares no ``alarm_budget`` (the page checks first)."""
    rates: dict[str, float] = {}
    if len(spent) and "events_per_s" in spent:
        rates = {m: float(r) for m, r in zip(spent["model"], spent["events_per_s"]) if pd.notna(r) and r > 0}
    b = cfg.alarm_budget
    plan = cfg.budget_plan(rates)
    if b is None or plan is None:
        raise ConfigurationError("the monitor config declares no alarm_budget: there is no budget to show")
    days = SECONDS_PER[b.per] / SECONDS_PER["day"]
    used = dict(zip(spent["model"], spent["alarms"])) if len(spent) and "alarms" in spent else {}
    rows = []
    expected = 0.0
    for line in plan:
        wpp = None if line.windows_per_day is None else line.windows_per_day * days
        if line.window_level is not None and wpp is not None:
            expected += line.window_level * wpp * line.families
        online = None if line.fixed_per_day is None else line.fixed_per_day * days
        expected += online or 0.0
        rows.append(
            {
                "model": line.model_id,
                "allotted": line.share_per_day * days,
                "spent": int(used.get(line.model_id, 0)),
                "windows": wpp,
                "rate from": line.rate_source,
                "families": line.families,
                "families by kind": line.kinds,
                "online alarms": online,
                "tests per family": line.tests,
                "level per window": line.window_level,
                "level per test": line.test_level,
            }
        )
    table = pd.DataFrame(rows)
    return BudgetView(
        float(b.false_alarms),
        b.per,
        period_seconds(b.per),
        int(table["spent"].sum()) if len(table) else 0,
        expected,
        table,
    )
