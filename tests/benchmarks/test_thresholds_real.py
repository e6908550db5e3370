"""The threshold measurement's pieces: known changes from annotators, episodes, and one real series."""

from __future__ import annotations

from benchmarks.thresholds_real import episodes, known_changes, measure, river_streams, summary


def test_a_change_is_known_when_half_the_annotators_mark_it():
    ann = {"a": [50, 200], "b": [53], "c": [300], "d": [48, 205]}
    # 48/50/53: three of four, at their median; 200/205: two of four (half), at 202; 300: one of four
    assert known_changes(ann) == [50, 202]
    assert known_changes({"a": [10], "b": [100], "c": []}) == []  # one of three each: not known


def test_episodes_split_the_stream_between_known_changes():
    eps = episodes(200, [100], window=10, ref_windows=3)
    first = eps[0]
    assert (first.ref.start, first.ref.stop) == (0, 30)
    assert [(s.start, s.stop) for s in first.quiet] == [
        (30, 40),
        (40, 50),
        (50, 60),
        (60, 70),
        (70, 80),
        (80, 90),
        (90, 100),
    ]
    assert first.change == 100 and first.after[0].start == 100 and len(first.after) == 5
    assert eps[1].change is None and eps[1].after == []


def test_measure_on_a_real_river_series():
    occ = [s for s in river_streams() if s.name == "Occupancy"]
    res = measure(occ, window=10, ref_windows=8, methods=("p_value", "both"))
    row = res["Occupancy"]
    assert row["known_changes"] == [53, 142, 236, 416]
    assert row["p_value"]["quiet_windows"] == row["both"]["quiet_windows"] > 0
    assert row["both"]["false_alarms"] <= row["p_value"]["false_alarms"]
    assert set(summary(res)) == {"p_value", "both"}
