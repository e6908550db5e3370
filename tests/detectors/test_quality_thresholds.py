"""Quality rates judged against the reference: chunk band (numpy by hand) or a Clopper-Pearson /
binomial bound (scipy's binomtest and binom, independently) when the reference has none."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from detectors import records as R
from detectors.frame import Frame
from detectors.quality import data_quality, quality_verdicts, reference_quality
from detectors.reference import Reference, attach_reference_frame
from detectors.runner import DataQuality, WindowContext
from detectors.spec import DriftSpec, FeatureSpec
from detectors.thresholds import binomial_rate_upper, judge_rate


@pytest.mark.parametrize(
    "x,N,n,level", [(0, 5000, 1000, 0.001), (3, 2000, 500, 0.01), (40, 1000, 1000, 0.05), (0, 200, 50, 0.05)]
)
def test_binomial_bound_matches_scipy_by_hand(x, N, n, level):
    # Clopper-Pearson one-sided upper bound: the p whose exact test of x successes has p-value level
    ci = stats.binomtest(x, N).proportion_ci(confidence_level=1 - 2 * level, method="exact")
    p_u = ci.high
    # the largest count c whose exceedance P(X > c) is at most level, found by walking the sf
    c = next(k for k in range(n + 1) if stats.binom.sf(k, n, p_u) <= level)
    assert binomial_rate_upper(x, N, n, level) == pytest.approx(c / n, abs=1e-12)
    # and the next count below would exceed the level (so the bound is the smallest such)
    if c > 0:
        assert stats.binom.sf(c - 1, n, p_u) > level


def test_binomial_bound_false_alarm_rate_at_most_level():
    """Reference with rate 0.002: windows drawn at that rate alarm at most ~level of the time."""
    rng = np.random.default_rng(1)
    level = 0.01
    upper = binomial_rate_upper(int(0.002 * 20000), 20000, 1000, level)
    rates = rng.binomial(1000, 0.002, 200_000) / 1000
    assert (rates > upper).mean() <= level


def test_chunk_band_when_reference_rates_vary_else_binomial():
    chunk = np.array([0.0, 0.05, 0.01, 0.04, 0.02])  # bursts: the rate moves far more than sampling
    v = judge_rate(0.09, chunk, 120, 5000, 1000, 0.001, 3.0)
    assert v.method == "reference_chunks"
    assert v.upper == pytest.approx(chunk.mean() + 3 * chunk.std())
    assert v.upper > binomial_rate_upper(120, 5000, 1000, 0.001)
    assert v.alarm
    calm = np.array([0.024, 0.025, 0.023, 0.024, 0.024])  # narrower than sampling: the binomial floor wins
    c = judge_rate(0.03, calm, 120, 5000, 1000, 0.001, 3.0)
    assert c.method == "binomial" and c.upper == pytest.approx(binomial_rate_upper(120, 5000, 1000, 0.001))
    assert not c.alarm
    zero = judge_rate(0.001, np.zeros(5), 0, 5000, 1000, 0.001, 3.0)
    assert zero.method == "binomial" and not zero.alarm  # one missing in 1,000 is no alarm
    assert judge_rate(0.05, np.zeros(5), 0, 5000, 1000, 0.001, 3.0).alarm


def _frame(n: int, missing: float, seed: int, t0: float = 0.0) -> Frame:
    rng = np.random.default_rng(seed)
    age = rng.normal(50, 10, n)
    age[rng.random(n) < missing] = np.nan
    color = np.array(["a", "b"], dtype=object)[rng.integers(0, 2, n)]
    return Frame.from_columns(
        event_id=np.arange(n).astype(str),
        event_time=t0 + np.arange(n, dtype=float),
        numeric={"age": age},
        categorical={"color": color},
    )


FEATS = (
    FeatureSpec(name="age", kind="numeric", min=0, max=120),
    FeatureSpec(name="color", kind="categorical", allowed=["a", "b"]),
)


def test_reference_chunks_by_hand():
    rows = _frame(5000, 0.02, 3)
    ref = reference_quality(rows, FEATS, 1000, 5, 50)
    by_hand = [np.isnan(rows.numeric["age"][i * 1000 : (i + 1) * 1000]).mean() for i in range(5)]
    np.testing.assert_allclose(ref.chunk_rates["age"]["missing_rate"], by_hand)
    assert ref.totals["age"].n_missing == int(np.isnan(rows.numeric["age"]).sum())
    q = data_quality(_frame(1000, 0.2, 4), FEATS)
    v = quality_verdicts(q, FEATS, ref, 0.05)
    level = 0.05 / 6  # age: missing, type error, out of range; color: missing, type error, unknown
    assert v[0]["quality_level"] == pytest.approx(level)
    k = stats.norm.isf(level)
    chunk_upper = np.mean(by_hand) + k * np.std(by_hand)
    floor = binomial_rate_upper(ref.totals["age"].n_missing, 5000, 1000, level)
    assert v[0]["missing_rate_upper"] == pytest.approx(max(chunk_upper, floor))
    assert v[0]["missing_rate_method"] == ("reference_chunks" if chunk_upper > floor else "binomial")
    assert v[0]["quality_alarm"] == 1
    assert v[1]["missing_rate_method"] == "binomial" and v[1]["quality_alarm"] == 0


def test_quality_points_carry_method_band_and_alarm():
    rows = _frame(5000, 0.0, 5)
    ref = attach_reference_frame(Reference.from_frame(rows, list(FEATS)), rows)
    window = _frame(1000, 0.05, 6, t0=10_000)
    recs = DataQuality().evaluate(WindowContext("m", "1", window, ref, FEATS, DriftSpec()))
    age = next(r for r in recs if r.tags[R.T_FEATURE] == "age")
    assert age.fields["missing_rate_method"] == "binomial"
    assert age.fields["missing_rate_upper"] == pytest.approx(binomial_rate_upper(0, 5000, 1000, 0.05 / 6))
    assert age.fields["quality_alarm"] == 1
    color = next(r for r in recs if r.tags[R.T_FEATURE] == "color")
    assert color.fields["quality_alarm"] == 0
    # no reference yet: quality still written, without verdict fields
    bare = DataQuality().evaluate(WindowContext("m", "1", window, None, FEATS, DriftSpec()))
    assert "quality_alarm" not in bare[0].fields


@pytest.mark.slow  # hundreds of simulated windows (~6 s)
def test_stationary_windows_rarely_alarm():
    """20 features, 1 % missing and ~0.3 % out of range, iid: the family level (0.05) bounds the alarms."""
    rng = np.random.default_rng(0)
    feats = [FeatureSpec(name=f"x{i}", kind="numeric", min=-3, max=3) for i in range(20)]

    def frame(n):
        num = {f.name: np.where(rng.random(n) < 0.01, np.nan, rng.normal(size=n)) for f in feats}
        return Frame.from_columns(event_id=np.arange(n).astype(str), event_time=np.arange(n, dtype=float), numeric=num)

    ref = reference_quality(frame(10_000), feats, 1000, 5, 50)
    alarms = sum(
        any(v["quality_alarm"] for v in quality_verdicts(data_quality(frame(1000), feats), feats, ref, 0.05))
        for _ in range(200)
    )
    assert alarms <= 0.05 * 200 * 2  # at most twice the level (sampling of 200 windows)
