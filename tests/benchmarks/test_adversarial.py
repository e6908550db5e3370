"""``driftwatch bench adversarial``: the issue's done-when criteria at modest sizes, and the CLI."""

from __future__ import annotations

import json

import pytest

from benchmarks import adversarial as B
from streams.cli import main


@pytest.fixture(scope="module")
def result() -> dict:
    o = B.Options.quick(seed=3)
    o.benign_sources, o.attack_sources, o.attack_queries = 120, 12, 220
    o.windows, o.shift_windows, o.clients = 10, 8, 30
    return B.run_benchmark(o)


@pytest.mark.slow  # the module's benchmark run (~1 min)
def test_done_when_criteria_hold(result: dict) -> None:
    ext, eva, sh = result["extraction"], result["evasion"], result["benign_shift"]
    # >= 90% of extraction attackers flagged within 200 queries, <= 1% of benign clients ever
    assert ext["jbda"]["detected_within_200"] >= 0.9
    assert ext["jbda"]["queries_to_detection_p90"] <= 200
    assert ext["benign"]["false_positive_rate"] <= 0.01 and ext["benign"]["sources"] == 120
    # evasion windows score above benign ones
    assert eva["auc"] >= 0.95
    assert eva["flagged_benign_windows"] <= 0.1 and eva["attack"]["flip_rate"] > 0.9
    # the benign shift raises drift, not the extraction flag (and not the adversarial score)
    assert sh["shift"]["drift_rate"] > 0.5 and sh["stationary"]["drift_rate"] < 0.5
    assert sh["shift"]["extraction_flagged_clients"] == 0
    assert sh["shift"]["adversarial_flag_rate"] <= 0.2
    # the demo's drift and the other benign shifts (both demo models) flag no window and no source
    shifts = result["benign_shifts"]
    kinds = {k.split("/")[1] for k in shifts}
    assert {
        "demo-drift",
        "toward-boundary",
        "mean-shift",
        "scale",
        "new-segment",
        "seasonal",
        "unusual-client",
    } <= kinds and "diabetes/demo-drift" in shifts
    for name, r in shifts.items():
        assert r["shift"]["drift_rate"] > 0.5 or name.endswith("unusual-client"), name  # the inputs did move
        for phase in ("stationary", "shift"):
            assert r[phase]["adversarial_flag_rate"] == 0 and not r[phase]["flagged_clients"], (name, phase, r[phase])
    # while the population rates against the reference rose (what used to flag)
    assert shifts["wine/demo-drift"]["shift"]["low_margin_rate_mean"] > 0.15
    assert shifts["wine/toward-boundary"]["shift"]["low_margin_rate_mean"] > 0.3
    assert all(result["done_when"].values()), result["done_when"]


@pytest.mark.slow  # the module's benchmark run (~1 min)
def test_output_is_json_with_the_reported_numbers(result: dict) -> None:
    text = json.dumps(result)
    back = json.loads(text)
    for strategy in B.STRATEGIES:
        assert {"detected_within_200", "queries_to_detection_median", "queries_to_detection_p90"} <= set(
            back["extraction"][strategy]
        )
    assert {"auc", "component_auc", "windows"} <= set(back["evasion"])
    assert {"stationary", "shift"} <= set(back["benign_shift"])


def test_cli_routes_and_rejects_bad_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["bench", "adversarial", "--help"])
    assert e.value.code == 0 and "--attack-queries" in capsys.readouterr().out
    assert main(["bench", "adversarial", "--strategies", "jbda,magic"]) == 2
    assert "unknown strategies ['magic']" in capsys.readouterr().err
