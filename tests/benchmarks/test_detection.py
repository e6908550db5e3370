"""``driftwatch bench detection`` runs end to end (tiny sizes) and prints the documented JSON."""

from __future__ import annotations

import argparse
import json

import pytest

from benchmarks import detection


@pytest.mark.slow  # the detection benchmark's quick run (~30 s)
def test_detection_benchmark_prints_json(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    detection.add_arguments(parser)
    args = parser.parse_args(
        [
            "--no-alibi",
            "--features",
            "5",
            "--window",
            "300",
            "--stationary-windows",
            "20",
            "--mv-windows",
            "4",
            "--streams",
            "2",
            "--mmd-permutations",
            "20",
            "--mmd-rows",
            "100",
            "--ert",
            "20000",
            "--error-bootstraps",
            "3000",
            "--error-events",
            "5000",
            "--error-streams",
            "1",
            "--ert-small",
            "300",
            "--online-ert",
            "200",
            "--online-bootstraps",
            "2000",
            "--small-bootstraps",
            "3000",
            "--summary-windows",
            "16",
            "--summary-bins",
            "256",
            "--cache-dir",
            str(tmp_path),
        ]
    )
    assert detection.run(args) == 0
    report = json.loads(capsys.readouterr().out)
    cov = report["covariate"]
    assert set(cov["stationary"]) == {"ks_native", "mmd_native", "pca_native"}
    assert cov["stationary"]["ks_native"]["windows"] == 20
    for scen in ("abrupt", "gradual", "recurring", "joint"):
        assert {"delay_windows_mean", "power", "false_alarms_per_1000_windows"} <= set(cov[scen]["ks_native"])
    con = report["concept_error_stream"]
    assert set(con["stationary"]) == {"fet_native", "adwin_river", "pagehinkley_river"}
    assert con["abrupt"]["fet_native"]["detected"] == 2
    assert "fet_native" in con["side_by_side_small_ert"]
    assert set(report["checks"]) == {
        "univariate_false_alarms_at_or_below_configured_within_50pct",
        "abrupt_0.5sd_one_of_20_detected_in_first_full_window",
        "error_stream_delay_no_worse_than_adwin",
        "error_stream_false_alarms_no_more_than_adwin",
        "summary_verdicts_agree_with_exact_on_99pct_of_windows",
    }
    summ = report["summary_vs_exact"]
    for method in ("both", "p_value"):
        assert summ[method]["windows"] == 16
        assert summ[method]["windows_verdict_differs"] <= 16
        assert 0 < summ[method]["max_abs_ks_difference"] < 0.02  # 256 bins, 300-event windows
    assert summ["p_value"]["windows_drifting_exact"] > 0  # the shifted windows drift
    assert list(tmp_path.glob("*.npz"))  # online calibrations cached where asked
