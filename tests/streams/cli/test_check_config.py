"""``driftwatch check-config``: it rejects what the worker would reject, naming the field.

The worker builds a file reference with :func:`streams.worker.monitors.file_reference` and, when that
fails, logs an error and runs without drift tests. ``check-config`` must fail on the same files,
so every case below is also handed to the worker's own code path (``Pipeline._file_reference``).
"""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
import yaml

from streams.cli import main
from streams.cli.check_config import problems
from streams.worker.monitors import load_monitors

FEATURES = [
    {"name": "age", "kind": "numeric"},
    {"name": "churned", "kind": "boolean"},
    {"name": "plan", "kind": "categorical"},
]
GOOD_CSV = "age,churned,plan\n" + "".join(
    f"{20 + i % 40},{'True' if i % 3 else 'False'},{'pro' if i % 2 else 'free'}\n" for i in range(200)
)


def config(tmp_path: Path, reference: str, webhooks: list | None = None) -> Path:
    cfg = {"models": [{"model_id": "m", "features": FEATURES, "reference": {"file": reference}}]}
    if webhooks:
        cfg["webhooks"] = webhooks
    path = tmp_path / "monitors.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def worker_reference(path: Path):
    """What the worker makes of the config's reference file (None: it runs without drift tests)."""
    from streams.settings import Settings
    from streams.worker.deadletter import DeadLetterPublisher
    from streams.worker.pipeline import Pipeline
    from tests.sinks import CollectSink

    async def no_dead_letters(key, value, headers):
        raise AssertionError("nothing is decoded here")

    cfg = load_monitors(path)
    pipeline = Pipeline(Settings(), cfg, sink=CollectSink(), deadletters=DeadLetterPublisher(no_dead_letters))
    return pipeline._file_reference(cfg.models[0])


def test_a_gzipped_csv_written_by_pandas_is_accepted_and_used_by_the_worker(tmp_path, capsys):
    with gzip.open(tmp_path / "ref.csv.gz", "wt") as fh:
        fh.write(GOOD_CSV)
    path = config(tmp_path, "ref.csv.gz")
    assert main(["check-config", str(path)]) == 0
    assert "reference ref.csv.gz: 200 rows" in capsys.readouterr().out
    ref = worker_reference(path)
    assert ref is not None and ref.n_rows == 200
    assert ref.categorical["churned"].categories.tolist() == ["false", "true"]


BAD = {
    "corrupt.csv.gz": (b"age,churned,plan\n1,True,pro\n", "not a readable gzip file"),
    "columns.csv": (b"age,plan\n1,pro\n", "missing column(s) 'churned' (boolean)"),
    "types.csv": (b"age,churned,plan\n1,True,pro\nold,False,free\n", "column 'age' is numeric but row 2"),
    "boolean.csv": (b"age,churned,plan\n1,True,pro\n2,perhaps,free\n", "column 'churned' is boolean but row 2"),
    "ref.xlsx": (b"PK\x03\x04", "unknown reference file type '.xlsx'"),
    "empty.jsonl": (b"\n", "has no rows"),
    "truncated.parquet": (b"PAR1\x00\x00", "not a readable Parquet file"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_a_reference_the_worker_would_reject_is_reported_with_its_field(tmp_path, capsys, name):
    content, says = BAD[name]
    (tmp_path / name).write_bytes(content)
    path = config(tmp_path, name)
    assert main(["check-config", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}: models[0].reference.file: " in err and says in err and name in err, err
    assert worker_reference(path) is None  # the worker would have run this model without drift tests


def test_a_missing_reference_file_is_reported(tmp_path, capsys):
    path = config(tmp_path, "nope.csv")
    assert main(["check-config", str(path)]) == 1
    err = capsys.readouterr().err
    assert "models[0].reference.file" in err and "nope.csv: reference file not found" in err


def test_unset_webhook_secrets_are_reported(tmp_path, capsys, monkeypatch):
    (tmp_path / "ref.csv").write_text(GOOD_CSV)
    monkeypatch.delenv("DW_TEST_HOOK_SECRET", raising=False)
    monkeypatch.delenv("DW_TEST_HOOK_URL", raising=False)
    path = config(
        tmp_path,
        "ref.csv",
        webhooks=[
            {"name": "ops", "url": "https://example.org/hook", "secret_env": "DW_TEST_HOOK_SECRET"},
            {"name": "chat", "url_env": "DW_TEST_HOOK_URL", "secret_file": str(tmp_path / "no-secret")},
        ],
    )
    assert main(["check-config", str(path)]) == 1
    err = capsys.readouterr().err
    assert "webhooks[0].secret_env: webhook 'ops': environment variable DW_TEST_HOOK_SECRET is not set" in err
    assert "webhooks[1].url_env: webhook 'chat': environment variable DW_TEST_HOOK_URL is not set" in err
    assert "webhooks[1].secret_file: webhook 'chat': cannot read secret_file" in err
    monkeypatch.setenv("DW_TEST_HOOK_SECRET", "s3cret-value")
    monkeypatch.setenv("DW_TEST_HOOK_URL", "https://chat.example.org/x")
    (tmp_path / "no-secret").write_text("another-secret\n")
    assert main(["check-config", str(path)]) == 0
    out = capsys.readouterr()
    assert "s3cret-value" not in out.out + out.err and "another-secret" not in out.out + out.err


def test_problems_reads_no_broker_and_lists_everything(tmp_path):
    """Every problem at once (not only the first), each with its own field path."""
    (tmp_path / "a.csv").write_bytes(BAD["columns.csv"][0])
    cfg = {
        "models": [
            {"model_id": m, "features": FEATURES, "reference": {"file": f}}
            for m, f in (("a", "a.csv"), ("b", "b.parquet"))
        ]
    }
    path = tmp_path / "monitors.yaml"
    path.write_text(yaml.safe_dump(cfg))
    found, summaries = problems(load_monitors(path))
    assert [p for p, _ in found] == ["models[0].reference.file", "models[1].reference.file"]
    assert summaries == {}


def test_check_config_explains_the_verdict_rule_and_the_alarm_budget(tmp_path, capsys):
    feats = [{"name": "age", "kind": "numeric"}, {"name": "plan", "kind": "categorical"}]
    path = tmp_path / "monitors.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "alarm_budget": {"false_alarms": 7, "per": "week"},
                "models": [
                    {
                        "model_id": "a",
                        "features": feats,
                        "window": {"size_seconds": 600},
                        "drift": {"threshold": {"method": "reference_chunks", "sd_multiplier": 3}},
                    },
                    {
                        "model_id": "b",
                        "features": feats,
                        "window": {"size_events": 500},
                        "drift": {"threshold": {"method": "p_value"}},
                    },
                ],
            }
        )
    )
    assert main(["check-config", str(path)]) == 0
    out = capsys.readouterr().out
    assert (
        "drift (reference_chunks): a feature drifts when its Kolmogorov-Smirnov / chi-square statistic "
        "is above mean + 3 sd of the same statistic on the reference's chunks" in out
    )
    assert "fewer than 5 such chunks" in out  # the fallback is said too
    assert "drift (p_value): a feature drifts when its Kolmogorov-Smirnov / chi-square p-value is below" in out
    assert "level follows the observed event rate" in out  # b counts events and declares no rate
    assert "alarm budget: 7 false alarm(s) per week" in out and "(1/day)" in out
    # every alarming family counts: drift, quality, prediction drift, CBPE per model: 1 alarm a day over 8
    level = 1 / (8 * 144)  # a: 144 windows a day
    assert (
        f"a: 0.5 alarm(s)/day over 4 family(ies) (drift 1, quality 1, prediction 1, performance 1) x 2 "
        f"test(s); windows/day 144 (size_seconds); level {level:.3g} per window, {level / 2:.3g} per test; "
        f"online detectors 0/day" in out
    )
    # the quality rule in words: 2 rates per feature here (no bounds, no allowed list)
    assert "quality: each of 4 rate(s)" in out and "Clopper-Pearson upper bound of the reference rate" in out
    assert f"at level {1 / (8 * 144) / 4:.3g} (family level {1 / (8 * 144):.3g} / 4)" in out


def test_the_online_detectors_expected_false_alarms_come_off_the_budget(tmp_path, capsys):
    feats = [{"name": "age", "kind": "numeric"}]
    path = tmp_path / "monitors.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "alarm_budget": {"false_alarms": 2, "per": "day", "event_rates": {"a": 0.1}},
                "models": [
                    {
                        "model_id": "a",
                        "features": feats,
                        "window": {"size_events": 500},
                        "task": "regression",
                        "drift": {"online": {"features": ["age"], "ert": 10000}},
                    }
                ],
            }
        )
    )
    assert main(["check-config", str(path)]) == 0
    out = capsys.readouterr().out
    online = 0.1 * 86400 / 10000  # one feature, one false alarm per 10,000 events, 8,640 events a day
    wpd = 0.1 * 86400 / 500
    level = (2 - online) / (3 * wpd)  # drift, quality, prediction (regression: no CBPE)
    assert "over 3 family(ies) (drift 1, quality 1, prediction 1)" in out
    assert f"level {level:.3g} per window" in out and f"online detectors {online:.3g}/day" in out
    cfg = load_monitors(path)
    assert cfg.models[0].drift.p_val == pytest.approx(level)
    # a budget the online detectors alone exceed is refused, with the reason
    path.write_text(path.read_text().replace("false_alarms: 2", "false_alarms: 0.5"))
    assert main(["check-config", str(path)]) != 0
    cap = capsys.readouterr()
    assert "online detectors alone expect 0.864" in cap.out + cap.err
