"""streams/worker/evaluation.py: what a closed window's evaluation hands to the sink."""

from __future__ import annotations

from detectors import records as R
from detectors.records import Record
from streams.worker.evaluation import RepeatFilter

S = 1_000_000_000  # ns per second


def _ref_hist(t_s: int, counts=(3, 4), feature: str = "x", **tags) -> Record:
    fields = {"b00": counts[0], "b01": counts[1], "n": sum(counts), R.F_WINDOW_START: float(t_s - 5)}
    return Record(R.REFERENCE_HISTOGRAM, {"model": "m", "version": "1", "feature": feature, **tags}, fields, t_s * S)


def _impact(t_s: int, importance: float = 0.5) -> Record:
    return Record(R.IMPACT, {"model": "m", "version": "1", "feature": "x"}, {"importance": importance}, t_s * S)


def _drift(t_s: int) -> Record:
    return Record(R.DRIFT, {"model": "m", "version": "1", "feature": "x"}, {"statistic": 0.1}, t_s * S)


def test_repeats_of_the_reference_histogram_and_impact_are_left_out_and_the_rest_kept():
    f = RepeatFilter(refresh_s=3600)
    first = f.filter([_ref_hist(10), _impact(10), _drift(10)])
    assert [r.measurement for r in first] == [R.REFERENCE_HISTOGRAM, R.IMPACT, R.DRIFT]
    # the next window: same reference, same impacts (only the window start differs): only the drift point
    second = f.filter([_ref_hist(20), _impact(20), _drift(20)])
    assert [r.measurement for r in second] == [R.DRIFT]


def test_a_changed_point_or_another_series_is_written():
    f = RepeatFilter(refresh_s=3600)
    f.filter([_ref_hist(10), _impact(10)])
    out = f.filter([_ref_hist(20, counts=(5, 2)), _impact(20, importance=0.7), _ref_hist(20, segment="a=1")])
    assert len(out) == 3  # new reference bins, new impact, a segment's first
    assert out[0].fields["b00"] == 5 and out[1].fields["importance"] == 0.7
    # and the new values are what later windows are compared with
    assert f.filter([_ref_hist(30, counts=(5, 2))]) == []


def test_an_unchanged_point_is_written_again_after_refresh_s_of_window_time():
    f = RepeatFilter(refresh_s=60)
    assert len(f.filter([_ref_hist(0)])) == 1
    assert f.filter([_ref_hist(59)]) == []
    assert len(f.filter([_ref_hist(60)])) == 1  # 60 s after the last one written
    assert f.filter([_ref_hist(100)]) == []
    # time going backwards (a partition re-read from its checkpoint): written, as it may be a rewrite
    assert len(f.filter([_ref_hist(1)])) == 1


def test_the_remembered_series_are_bounded():
    f = RepeatFilter(max_series=3)
    for i in range(10):
        f.filter([_ref_hist(10, feature=f"x{i}")])
    assert len(f._last) <= 3
