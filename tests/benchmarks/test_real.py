"""``driftwatch bench real --quick`` end to end: real worker on the local stack, peers beside it.

The run creates (once, then reuses) NannyML's virtualenv under ``.driftwatch/bench-real`` (the project's
state folder) with pip
from PyPI; the first run therefore takes a few minutes longer.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
from scipy.stats import chi2_contingency, ks_2samp

from benchmarks import real
from benchmarks.real_streams import ANNOTATION_SCALE, Stream, load_streams, river_episodes, site_packages

STATE = real.default_bench_dir()


def _stream(n: int = 1000, window: int = 100, ref_n: int = 300, changes=(600,)) -> Stream:
    import pandas as pd

    return Stream(
        "t",
        "real",
        "test",
        "classification",
        ["x"],
        [],
        pd.DataFrame({"x": np.zeros(n)}),
        window,
        ref_n,
        None if changes is None else list(changes),
        classes=["0", "1"],
        pred_label=np.array(["0"] * n, dtype=object),
        proba=np.tile([0.9, 0.1], (n, 1)),
        label=np.array(["0"] * n, dtype=object),
    )


def test_window_metrics_count_false_alarms_before_the_change_and_the_delay_after_it():
    s = _stream()  # windows 3..9 evaluated; change at 600: windows 3,4,5 quiet, window 6 holds the change
    alarms = {3: True, 4: False, 5: False, 6: False, 7: True, 8: True, 9: False}
    m = real.windows_summary(s, alarms)
    assert m["no_change_windows"] == 3 and m["false_alarms"] == 1
    assert m["false_alarms_per_100_windows"] == pytest.approx(33.3)
    assert m["delay_windows"] == 1 and m["delay_events"] == 200  # window 7 closes at event 800
    assert m["alarm_rate_after_change"] == pytest.approx(2 / 4)
    assert not m["found_change"]  # 2 of 4 after vs 1 of 3 before: not more frequent beyond chance
    long = _stream(n=3000, changes=(2000,))  # 17 quiet windows, 1 alarm; then 9 of 10 windows flagged
    clear = {k: (k == 5) or (k >= 20 and k != 21) for k in range(3, 30)}
    c = real.windows_summary(long, clear)
    assert c["false_alarms"] == 1 and c["delay_windows"] == 0 and c["found_change"]
    noisy = real.windows_summary(long, {k: k % 10 != 4 for k in range(3, 30)})  # 90 % of windows, both sides
    # flagged since window 15, before the change (window 20): no detection there; the next onset is window 25
    assert noisy["delay_windows"] == 5 and noisy["first_alarm_after_change_windows"] == 0
    assert noisy["alarming_since_before_change"] and not noisy["found_change"]
    from scipy.stats import fisher_exact

    assert fisher_exact([[9, 1], [1, 16]], alternative="greater").pvalue < 0.05
    none_known = real.windows_summary(_stream(changes=()), alarms)
    assert (
        none_known["no_change_windows"] == 7 and none_known["false_alarms"] == 3 and "delay_windows" not in none_known
    )
    undocumented = real.windows_summary(_stream(changes=None), alarms)
    assert undocumented["false_alarms"] is None and undocumented["alarms"] == 3


def test_windows_near_a_minority_annotators_mark_are_not_quiet():
    """TCPD's precision counts an alarm within the margin of *any* annotator's mark as a true positive."""
    s = _stream()  # windows 3..9 evaluated; change at 600 (window 6); quiet: 3, 4, 5
    s.marks, s.margin = [450, 640], 20  # one annotator marked 450 (window 4 only); 640 supports the change
    assert s.disputed_windows() == {4}
    m = real.windows_summary(s, {3: False, 4: True, 5: False, 6: True, 7: False, 8: False, 9: False})
    assert m["no_change_windows"] == 2 and m["false_alarms"] == 0 and m["false_alarms_per_100_windows"] == 0.0
    assert m["disputed_windows"] == [4] and m["alarms_in_disputed_windows"] == 1
    assert m["delay_windows"] == 0  # the known change keeps its scoring
    s.marks = [490]  # within 20 events of windows 4 and 5
    assert s.disputed_windows() == {4, 5}
    s.marks = [585]  # marks before the change's window, within the margin: an early detection, not a false alarm
    assert s.disputed_windows() == {5}


def test_river_episodes_carry_every_annotators_marks_scaled_like_the_changes():
    eps = {s.name: s for s in river_episodes(quick=False)}
    occ2 = eps[
        "occupancy_2"
    ]  # rows 236..466: annotator 9 marked 341 (window 10), 264; annotator 10 marked 267, 324, 360
    assert 341 - 236 in occ2.marks and occ2.margin == 5 and 10 in occ2.disputed_windows()
    b3 = eps["brent_3"]  # Brent annotations index every 10th day: marks and margin × 10
    assert b3.margin == 50 and all(m % 10 == 0 for m in (x + 2860 for x in b3.marks))


def test_a_verdict_that_stays_on_across_the_change_is_no_detection_of_it():
    s = _stream(n=1500, changes=(1000,))  # windows 3..14; window 10 holds the change
    on_before = {k: k >= 8 for k in range(3, 15)}  # turns on two windows early and stays on
    m = real.windows_summary(s, on_before)
    assert m["alarm_windows"] == list(range(8, 15))
    assert m["false_alarms"] == 2 and m["delay_windows"] is None and not m["detected"]
    assert m["alarming_since_before_change"] and m["first_alarm_after_change_windows"] == 0
    turns_on = real.windows_summary(s, {k: k == 5 or k >= 10 for k in range(3, 15)})  # quiet just before
    assert turns_on["delay_windows"] == 0 and turns_on["delay_events"] == 100 and turns_on["found_change"]
    assert not turns_on["alarming_since_before_change"]
    relapse = real.windows_summary(s, {k: k in (9, 10, 12, 13, 14) for k in range(3, 15)})
    assert relapse["delay_windows"] == 2 and relapse["alarming_since_before_change"]
    assert real.alarm_onsets({3: True, 4: True, 5: False, 6: True}, 3) == [3, 6]  # the first window: an onset


def test_windows_outside_the_reference_range_are_counted_apart():
    import pandas as pd

    s = _stream()  # reference rows 0..299, windows of 100; x in [0, 1] there
    x = np.r_[
        np.linspace(0, 1, 300),
        np.full(100, 0.5),
        np.r_[np.full(50, 2.0), np.full(50, 0.5)],
        np.r_[np.full(49, -1.0), np.full(51, 0.5)],
        np.full(400, 0.2),
    ]
    s.features = pd.DataFrame({"x": x})
    out = real.outside_reference(s)
    ref = x[:300]
    want = {
        k: np.mean((x[k * 100 : (k + 1) * 100] < ref.min()) | (x[k * 100 : (k + 1) * 100] > ref.max())) >= 0.5
        for k in range(3, 10)
    }
    assert out == want and out[4] and not out[5] and not out[3]
    m = real.windows_summary(s, {3: True, 4: True, 5: False, 6: True, 7: False, 8: False, 9: False}, out)
    # quiet windows 3, 4, 5; window 4 is outside the reference's range: 1 false alarm of 2 inside it
    assert m["false_alarms"] == 2 and m["no_change_windows_inside_reference_range"] == 2
    assert m["false_alarms_inside_reference_range"] == 1
    assert m["false_alarms_per_100_windows_inside_reference_range"] == pytest.approx(50.0)


def test_cbpe_summary_splits_at_the_change_and_compares_like_windows():
    s = _stream()  # windows 3..9 evaluated; change at 600 (windows 3, 4, 5 end before it)
    realized = {k: 0.9 for k in range(10)}
    nanny = {k: 0.9 + (0.01 if k < 6 else 0.3) for k in range(3, 10)}
    ours = {k: 0.9 + (0.01 if k < 6 else 0.05) for k in (3, 4, 5, 8, 9)}  # 6, 7 "not calibrated"
    m = real.cbpe_summary(s, nanny, realized, ours)
    assert m["windows"] == 7 and m["mae"] == pytest.approx((3 * 0.01 + 4 * 0.3) / 7, abs=1e-4)
    assert m["mae_before_change"] == pytest.approx(0.01)
    assert m["mae_same_windows_as_driftwatch"] == pytest.approx((3 * 0.01 + 2 * 0.3) / 5, abs=1e-4)
    d = real.cbpe_summary(s, ours, realized)
    assert d["windows"] == 5 and d["windows_evaluated"] == 7 and "mae_same_windows_as_driftwatch" not in d


def test_online_metrics_and_checks():
    s = _stream()
    m = real.online_summary(s, [250, 640, 900])
    assert m["false_alarms"] == 1 and m["delay_events"] == 40 and m["delay_windows"] == 0
    assert m["false_alarms_per_100_windows"] == pytest.approx(100 / 6, abs=0.05)
    reps = {
        "a": {
            "detectors": {
                "driftwatch_any_verdict": {
                    "false_alarms_per_100_windows": 1.0,
                    "delay_windows": 2,
                    "change_at_event": 600,
                },
                "alibi_tabular_drift": {"delay_windows": 1, "found_change": True},
                "nannyml_univariate": {"delay_windows": 3, "found_change": True},
                "driftwatch_error_stream": {"false_alarms": 0, "delay_events": 50, "change_at_event": 600},
                "river_adwin": {"false_alarms": 0, "delay_events": 80, "change_at_event": 600},
            },
            "performance": {"driftwatch_cbpe": {"mae": 0.02}, "nannyml_cbpe": {"mae": 0.025}},
        }
    }
    c = real.checks(reps)
    unset = (
        "false_alarms_within_declared_budget",
        "diagnostic_false_alarms_at_most_2_per_100_windows_inside_reference_range",
    )
    assert c["all"] == {k: (True if k not in unset else None) for k in c["all"]}
    reps["a"]["detectors"]["driftwatch_any_verdict"]["delay_windows"] = 3  # > faster peer + 1
    reps["a"]["performance"]["driftwatch_cbpe"]["mae"] = 0.031
    c = real.checks(reps)
    assert c["all"]["delay_no_later_than_slower_peer_and_within_one_window_of_faster"] is False
    assert c["all"]["cbpe_mae_at_most_nannyml_and_0.03"] is False
    # below NannyML over all its windows but not over the windows driftwatch estimated: not at most NannyML's
    reps["a"]["performance"] = {
        "driftwatch_cbpe": {"mae": 0.02},
        "nannyml_cbpe": {"mae": 0.025, "mae_same_windows_as_driftwatch": 0.015},
    }
    assert real.checks(reps)["all"]["cbpe_mae_at_most_nannyml"] is False
    reps["a"]["performance"]["nannyml_cbpe"]["mae_same_windows_as_driftwatch"] = 0.02
    assert real.checks(reps)["all"]["cbpe_mae_at_most_nannyml"] is True
    # no number at all: passes the "or concept unstable" line only when the withheld windows say why
    reps["a"]["performance"] = {"driftwatch_cbpe": {"mae": None, "windows": 0}, "nannyml_cbpe": {"mae": 0.16}}
    c = real.checks(reps)["all"]
    assert c["cbpe_mae_at_most_nannyml_and_0.03"] is False
    assert c["cbpe_mae_at_most_nannyml_and_0.03_or_concept_unstable"] is False
    reps["a"]["performance"]["driftwatch_cbpe"]["windows_concept_unstable"] = 44
    c = real.checks(reps)["all"]
    assert c["cbpe_mae_at_most_nannyml_and_0.03"] is False
    assert c["cbpe_mae_at_most_nannyml_and_0.03_or_concept_unstable"] is True


def test_river_episodes_replay_the_threshold_study_episodes():
    from benchmarks.thresholds_real import episodes, known_changes, river_streams

    eps = {s.name: s for s in river_episodes(quick=False)}
    occ = next(s for s in river_streams() if s.name == "Occupancy")
    want = episodes(len(occ.values), known_changes(occ.annotations), 10, 8)
    got = sorted(n for n in eps if n.startswith("occupancy_"))
    assert len(got) == len(want)
    for name, e in zip(got, want):
        s = eps[name]
        assert s.ref_n == e.ref.stop - e.ref.start and s.window == 10
        assert s.changes == ([] if e.change is None else [e.change - e.ref.start])
        assert np.allclose(s.features.to_numpy(), occ.values[e.ref.start : e.ref.start + s.n])
    # Apple's annotations index every 3rd trading day: the known change is the crash of September 2000
    assert ANNOTATION_SCALE == {"Apple": 3}
    assert eps["apple_1"].changes == [957]
    brent = [s for n, s in eps.items() if n.startswith("brent_")]
    assert brent and all(s.task == "regression" and s.label is None for s in brent)
    # the change-point series trend and wander: their monitors follow them (rolling), the rest keep first_n
    assert all(s.reference == {"rolling": True} for s in eps.values())
    models = real.monitor_config([eps["apple_1"], _stream()])["models"]
    assert [m["reference"] for m in models] == [{"rolling": True}, {"first_n": 300}]


@pytest.mark.slow  # the real-data benchmark end to end (several minutes)
def test_bench_real_quick_end_to_end(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    real.add_arguments(parser)
    out_file = tmp_path / "real.json"
    args = parser.parse_args(["--quick", "--state-dir", str(STATE), "--output", str(out_file)])
    assert real.run(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert json.loads(out_file.read_text()) == report

    streams = report["streams"]
    assert len(streams) >= 6
    for name, s in streams.items():  # the declared budget's allocation: 1 false alarm per 100 windows each
        b = s["budget"]
        assert b["window_level"] == pytest.approx(0.01) and b["windows_per_day"] == pytest.approx(1000), name
        if b["quiet_windows"] is not None:
            assert b["expected_false_alarms"] == pytest.approx(0.01 * b["quiet_windows"], abs=0.01), name
    assert sum(s["stream"]["kind"] == "real" for s in streams.values()) >= 3
    assert "synthetic_binary_classification" not in json.dumps(report)  # kept aside for acceptance
    for name, s in streams.items():
        d = s["detectors"]
        for det in ("driftwatch_data_drift", "driftwatch_any_verdict", "alibi_tabular_drift", "nannyml_univariate"):
            assert {"windows_evaluated", "alarms", "false_alarms", "false_alarms_per_100_windows"} <= set(d[det]), (
                name,
                det,
            )
        n_eval = s["stream"]["windows"] - s["stream"]["reference_first_n"] // s["stream"]["window"]
        # every evaluated window has a worker result and a verdict of each peer
        assert d["driftwatch_data_drift"]["windows_with_result"] == n_eval, name
        assert d["alibi_tabular_drift"]["windows_evaluated"] == n_eval, name
        assert d["nannyml_univariate"]["windows_evaluated"] == n_eval, name
        if s["stream"]["first_change_after_reference"] is not None:
            assert "delay_windows" in d["driftwatch_data_drift"] and "delay_events" in d["alibi_tabular_drift"]
        if s["stream"]["labelled"] and s["stream"]["task"] == "classification":
            for det in ("driftwatch_error_stream", "river_adwin", "river_pagehinkley"):
                assert {"alarms", "false_alarms", "false_alarms_per_100_windows"} <= set(d[det]), (name, det)
            perf = s["performance"]
            assert perf["nannyml_cbpe"]["windows"] == n_eval and 0 <= perf["nannyml_cbpe"]["mae"] <= 1, name
            # driftwatch's estimate exists once CBPE is calibrated; every window says one or the other
            dw = perf["driftwatch_cbpe"]
            assert dw["windows_with_result"] == n_eval, name
            assert dw["windows"] + dw["windows_not_calibrated"] == n_eval, name
            assert dw["windows"] == 0 or 0 <= dw["mae"] <= 1, name
    assert set(report["checks"]["all"]) == {
        "false_alarms_at_most_2_per_100_windows",
        "false_alarms_within_declared_budget",
        "delay_no_later_than_slower_peer_and_within_one_window_of_faster",
        "cbpe_mae_at_most_nannyml_and_0.03",
        "cbpe_mae_at_most_nannyml",
        "cbpe_mae_at_most_nannyml_and_0.03_or_concept_unstable",
        "error_stream_delay_at_most_adwin_and_no_more_false_alarms",
        "diagnostic_false_alarms_at_most_2_per_100_windows_inside_reference_range",
    }

    # the peers' numbers are their own: recompute them independently on the same data
    loaded = {s.name: s for s in load_streams(site_packages(STATE / "nannyml-venv"), True)}
    assert set(loaded) == set(streams)
    for name, chk in report["peer_checks"].items():
        s, first = loaded[name], chk["alibi_first_window_p_values"]
        k = first["window"]
        assert k == s.ref_n // s.window
        ref, win = s.features.iloc[: s.ref_n], s.features.iloc[k * s.window : (k + 1) * s.window]
        for j, f in enumerate(first["features"]):
            if f in s.numeric:
                p = ks_2samp(ref[f].to_numpy(float), win[f].to_numpy(float), method="asymp").pvalue
            else:
                a, b = ref[f].astype(str), win[f].astype(str)
                cats = sorted(set(a) | set(b))
                table = np.array([[int((a == c).sum()) for c in cats], [int((b == c).sum()) for c in cats]])
                p = chi2_contingency(table)[1]
            assert first["p_val"][j] == pytest.approx(p, rel=1e-6, abs=1e-12), (name, f)
    from river.drift import ADWIN

    for name, s in loaded.items():
        if not (s.labelled and s.task == "classification"):
            continue
        d, hits = ADWIN(), []
        for i, v in enumerate(s.errors().tolist()):
            d.update(v)
            if d.drift_detected:
                hits.append(i)
        assert streams[name]["detectors"]["river_adwin"]["first_alarms"] == hits[:5], name
        assert streams[name]["detectors"]["river_adwin"]["alarms"] == len(hits), name
        # realized accuracy is computed from the labels, not read from the worker
        e = s.errors()
        assert streams[name]["performance"]["realized_accuracy_after_reference"] == pytest.approx(
            1 - e[s.ref_n :].mean(), abs=1e-4
        )
