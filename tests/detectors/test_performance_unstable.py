"""CBPE's "concept unstable" gate (:class:`detectors.performance.CalibrationCollector`): a back-off on label
evidence. One concept change keeps estimating; a concept that flips every window goes "not calibrated:
concept unstable" with the evidence; a concept that moves within the calibration's own rows is caught by
:func:`detectors.performance.chunk_dispersion` (checked against scipy's chi-square); the state round-trips."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from detectors.performance import CBPE, CalibrationCollector, calibration_residuals, chunk_dispersion, fit_calibration
from tests.detectors.test_performance import _binary_rows, _split

CLASSES = ("0", "1")


def _feed(col: CalibrationCollector, rows) -> None:
    col.add(*_split(rows, CLASSES))


def test_backoff_doubles_from_the_second_recalibration_of_a_streak():
    got = [CalibrationCollector.backoff(k, 200, 3000) for k in range(0, 8)]
    assert got == [0, 0, 200, 400, 800, 1600, 3000, 3000]


def test_one_concept_change_keeps_estimating_as_soon_as_recalibrated():
    """A lasting first calibration, then one step change (as the phishing stream): the recalibration is the
    first of its streak, so its estimate is published as soon as it is fitted on min_rows labels."""
    rng = np.random.default_rng(40)
    col = CalibrationCollector(size=1000, min_rows=200)
    for _ in range(8):  # 1,000 calibrate, 3,000 test it: it lasted
        _feed(col, _binary_rows(rng, 500))
    assert col.calibration() is not None and col.moving_rows is None and not col.unstable
    published = []
    for _ in range(12):
        _feed(col, _binary_rows(rng, 250, flip_above=0.0))
        published.append(col.calibration() is not None)
    assert col.recalibrations == 1 and col.need == 0 and col.streak == 0  # the recalibration lasted too
    assert not col.unstable and col.unstable_reason is None
    k = published.index(True)
    assert k <= 1 and all(published[k:])  # from the first window the new calibration is fitted: estimates
    p, lab, pred = _binary_rows(rng, 5000, flip_above=0.0)
    assert abs(CBPE(col.calibration()).estimate(p, CLASSES, pred)["accuracy"] - np.mean(pred == lab)) < 0.03


def test_a_concept_that_flips_every_window_goes_concept_unstable_and_stays_so():
    rng = np.random.default_rng(41)
    col = CalibrationCollector(size=1000, min_rows=200)
    for _ in range(8):
        _feed(col, _binary_rows(rng, 500))
    needs, published = [], []
    for k in range(40):  # windows of 250 rows; the outcomes reverse every window
        _feed(col, _binary_rows(rng, 250, flip_above=0.0 if k % 2 == 0 else None))
        needs.append(col.need)
        published.append(col.calibration() is not None)
    assert col.recalibrations >= 10 and col.streak >= 10
    assert sum(published) <= 1  # at most the first recalibration's window (one change is trusted at once)
    assert col.unstable and col.calibration() is None and col.need == 1000
    assert needs == sorted(needs)  # the back-off only grows while no calibration lasts
    reason = col.unstable_reason
    assert reason.startswith("concept unstable: ") and f"{col.streak} calibrations in a row" in reason
    assert f"{col.recalibrations} recalibrations in all" in reason and "1,000 labels it was not fitted on" in reason
    # and it comes back once a calibration lasts: the concept settles
    for _ in range(20):
        _feed(col, _binary_rows(rng, 250, flip_above=0.0))
    assert not col.unstable and col.calibration() is not None and col.streak == 0


def test_a_concept_moving_within_the_calibration_rows_is_never_published():
    """The outcomes reverse every 250 rows from the start: no recalibration is needed to see it, the first
    calibration's own rows show it (chunk dispersion far beyond chance)."""
    rng = np.random.default_rng(42)
    col = CalibrationCollector(size=1000, min_rows=200)
    published = []
    for k in range(12):
        _feed(col, _binary_rows(rng, 250, flip_above=0.0 if k % 2 == 0 else None))
        published.append(col.calibration() is not None)
        if k == 3:  # full: 1,000 rows in four chunks that alternate
            assert col.recalibrations == 0 and col.moving_rows is not None and col.unstable
            assert "labels the calibration was fitted on" in col.unstable_reason
    assert not any(published[1:]) and col.unstable and col.streak >= 2


def test_a_stationary_stream_passes_the_dispersion_test():
    rng = np.random.default_rng(43)
    zs = []
    for _ in range(20):
        p, lab, pred = _binary_rows(rng, 3000)
        cal = fit_calibration(p, lab, CLASSES, pred)
        zs.append(chunk_dispersion(cal, p, lab, pred, 200)[0])
    assert max(zs) < 5.0 and abs(float(np.mean(zs))) < 1.0


def test_chunk_dispersion_matches_scipy_chi_square():
    rng = np.random.default_rng(44)
    rows = [_binary_rows(rng, 200, flip_above=0.9 if k % 3 == 0 else None) for k in range(10)]
    p, lab, pred = (np.concatenate(x) for x in zip(*rows))
    p, lab, pred = p[:2050], lab[:2050], pred[:2050]  # the last chunk takes the 50 left over
    cal = fit_calibration(p, lab, CLASSES, pred)
    z, k = chunk_dispersion(cal, p, lab, pred, 200)
    assert k == 10
    cuts = [slice(i * 200, (i + 1) * 200 if i < 9 else 2050) for i in range(10)]
    d = 0.0
    for c in cuts:
        u, v, _ = calibration_residuals(cal, p[c], lab[c], pred[c])
        d += u * u / v
    exact = stats.norm.isf(stats.chi2.sf(d, 9))  # the normal score of the chi-square tail, by scipy
    assert z == pytest.approx(exact, abs=0.15)


def test_the_gate_state_round_trips_through_the_checkpoint():
    """The label join checkpoints the collector as (scalars, arrays): a restored collector in the middle of an
    unstable streak has the same streak, need, rows held and reason, and gives the same next verdicts."""
    rng = np.random.default_rng(45)
    col = CalibrationCollector(size=1000, min_rows=200)
    for _ in range(8):
        _feed(col, _binary_rows(rng, 500))
    for k in range(6):
        _feed(col, _binary_rows(rng, 250, flip_above=0.0 if k % 2 == 0 else None))
    assert col.unstable and col.streak >= 3
    back = CalibrationCollector.from_state(*col.state())
    for name in ("streak", "need", "_tested", "_held", "_seen", "_streak_from", "moving_rows", "unstable"):
        assert getattr(back, name) == getattr(col, name), name
    assert back.unstable_reason == col.unstable_reason
    for k in range(12):
        rows = _binary_rows(rng, 250, flip_above=0.0)
        _feed(col, rows)
        _feed(back, rows)
        assert (back.unstable, back.need, back._tested) == (col.unstable, col.need, col._tested), k
        assert (back.calibration() is None) == (col.calibration() is None)
