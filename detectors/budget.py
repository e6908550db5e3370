"""One false-alarm budget for a whole deployment, split into per-test levels.

On-call people think in alarms per day, not in p-values: "at most 2 false
alarms a day across everything we monitor". A window's drift verdict is one
*family* of tests (all features of the window, Bonferroni within it, so the
family raises a false alarm with probability at most its level); a model with
segments has one family for the whole window plus one per segment. Given

* ``B`` — false alarms per day the deployment accepts (a weekly budget / 7),
* per model ``m``: ``W_m`` windows per day, ``F_m`` families per window,
  ``n_m`` tests (features) per family,

the budget is shared among models in proportion to their families,
``share_m = B · F_m / Σ F``, and spread evenly over the model's windows:

    level per family and window  α_m = share_m / (W_m · F_m) = B / (Σ F · W_m)
    level per test               α_m / n_m

so the expected number of false alarms on stationary data is
``Σ_m W_m · F_m · α_m = B``. A model's level depends only on its own window
rate: a model whose windows are counted in events (``size_events``) gets its
rate from the config (``alarm_budget.event_rates``) or, in the worker, from the
event rate it observes (:func:`windows_per_day`).

Every alarming verdict family the worker writes counts: per window, univariate drift and data
quality (each also per segment), prediction drift, multivariate drift (when on) and CBPE's
estimate against its reference-chunk band (classification). The online detectors' level is fixed
by their ERT calibration: their expected false alarms (``features · events/day / ert``) are
deducted from ``B`` first (:func:`online_per_day`, :func:`remaining`).

Levels are capped at :data:`MAX_LEVEL` (a budget larger than the windows can
spend does not make every window an alarm).

>>> lines = allocate(2.0, [ModelLoad("a", 288.0, 1, 20), ModelLoad("b", 24.0, 3, 5)])
>>> [(l.model_id, round(l.share_per_day, 2), f"{l.window_level:.2e}") for l in lines]
[('a', 0.5, '1.74e-03'), ('b', 1.5, '2.08e-02')]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from detectors.errors import ConfigurationError

SECONDS_PER = {"day": 86_400.0, "week": 7 * 86_400.0}
MAX_LEVEL = 0.25
"""Largest level a family gets, whatever the budget."""


@dataclass(frozen=True, slots=True)
class ModelLoad:
    """What one model spends tests on: windows per day (None: rate not known yet), families, tests."""

    model_id: str
    windows_per_day: float | None
    families: int
    tests: int
    rate_source: str = "size_seconds"  # size_seconds | declared | observed | unknown
    kinds: str = ""  # which verdict families, e.g. "drift 1, quality 1, prediction 1"
    # false alarms per day of detectors whose level the budget cannot set (online, ERT-calibrated):
    # deducted from the budget first; None: not known yet (no event rate)
    fixed_per_day: float | None = 0.0


@dataclass(frozen=True, slots=True)
class BudgetLine:
    """One model's part of the budget."""

    model_id: str
    share_per_day: float  # false alarms per day allotted to the model
    windows_per_day: float | None
    families: int
    tests: int
    window_level: float | None  # per family and window (None: rate unknown)
    rate_source: str
    kinds: str = ""
    fixed_per_day: float | None = 0.0  # the online detectors' expected false alarms, deducted first

    @property
    def test_level(self) -> float | None:
        """The Bonferroni share of one test (feature) in a family."""
        return None if self.window_level is None else self.window_level / max(self.tests, 1)


def per_day(false_alarms: float, per: str) -> float:
    """A budget of ``false_alarms`` per ``per`` ("day" | "week") as alarms per day."""
    if per not in SECONDS_PER:
        raise ValueError(f"budget period must be one of {sorted(SECONDS_PER)}, got {per!r}")
    if not false_alarms > 0:
        raise ValueError(f"false_alarms must be > 0, got {false_alarms}")
    return float(false_alarms) * SECONDS_PER["day"] / SECONDS_PER[per]


def windows_per_day(
    size_seconds: float | None = None, size_events: int | None = None, events_per_second: float | None = None
) -> float | None:
    """Windows a model closes per day: from the window length, or events per window and the rate."""
    if size_seconds is not None:
        return SECONDS_PER["day"] / float(size_seconds)
    if size_events is not None and events_per_second is not None and events_per_second > 0:
        return SECONDS_PER["day"] * float(events_per_second) / float(size_events)
    return None


def window_level(alarms_per_day: float, total_families: int, wpd: float | None) -> float | None:
    """α of one family in one window: ``B / (Σ F · W_m)``, capped at :data:`MAX_LEVEL`."""
    if wpd is None or wpd <= 0 or total_families <= 0:
        return None
    return min(MAX_LEVEL, alarms_per_day / (total_families * wpd))


class BudgetExhausted(ConfigurationError):
    """The detectors whose level is fixed (online, ERT) alone expect more false alarms than the budget."""


def remaining(alarms_per_day: float, fixed: Sequence[float | None]) -> float:
    """The budget left for the families with a level after the fixed contributions (unknown ones: 0)."""
    spent = sum(f for f in fixed if f)
    left = alarms_per_day - spent
    if not left > 0:
        raise BudgetExhausted(
            f"the online detectors alone expect {spent:.3g} false alarm(s) per day, the budget "
            f"is {alarms_per_day:.3g}: raise drift.online.ert or the budget"
        )
    return left


def allocate(alarms_per_day: float, loads: Sequence[ModelLoad]) -> list[BudgetLine]:
    """Split ``alarms_per_day`` over ``loads`` (see the module docstring): the fixed contributions
    (``fixed_per_day``, online detectors) are deducted first, the rest is shared by the families."""
    left = remaining(alarms_per_day, [m.fixed_per_day for m in loads])
    total = sum(max(m.families, 1) for m in loads)
    out = []
    for m in loads:
        f = max(m.families, 1)
        out.append(
            BudgetLine(
                m.model_id,
                left * f / total if total else 0.0,
                m.windows_per_day,
                f,
                m.tests,
                window_level(left, total, m.windows_per_day),
                m.rate_source,
                m.kinds,
                m.fixed_per_day,
            )
        )
    return out


def expected_alarms(lines: Sequence[BudgetLine]) -> float:
    """False alarms per day the allocation spends on stationary data (≤ the budget; less when capped),
    the fixed (online) contributions included."""
    return sum(
        line.window_level * line.windows_per_day * line.families
        for line in lines
        if line.window_level is not None and line.windows_per_day
    ) + sum(line.fixed_per_day or 0.0 for line in lines)


def online_per_day(n_features: int, ert: float, events_per_second: float | None) -> float | None:
    """Expected false alarms per day of ``n_features`` online detectors calibrated to one false alarm per
    ``ert`` events each: ``n · events/day / ert`` (0 without features; None: event rate not known)."""
    if n_features <= 0:
        return 0.0
    if events_per_second is None:
        return None
    return n_features * events_per_second * SECONDS_PER["day"] / float(ert)
