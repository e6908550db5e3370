"""``driftwatch init --from-csv``: configs inferred from three tables that check-config accepts and a worker runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pytest
import yaml

from streams.cli import main

N = 600


def tables(tmp_path: Path) -> dict[str, tuple[Path, dict]]:
    """Three CSVs written by pandas — numeric, categorical, boolean — each with missing values."""
    rng = np.random.default_rng(4)
    numeric = pd.DataFrame(
        {
            "temp": rng.normal(20, 5, N).round(2),
            "load": rng.exponential(3, N).round(3),
            "rpm": rng.integers(500, 3000, N),
        }
    )
    numeric.loc[::9, "temp"] = np.nan
    numeric["y"] = (numeric["load"] * 2 + rng.normal(0, 1, N)).round(3)
    categorical = pd.DataFrame(
        {
            "country": rng.choice(["DE", "FR", "NL", "PL"], N),
            "plan": rng.choice(["free", "pro"], N),
            "tier": rng.integers(1, 4, N).astype(float),
            "user": [f"u{i}" for i in range(N)],
        }
    )
    categorical.loc[::7, "country"] = None
    categorical.loc[::5, "tier"] = np.nan  # pandas writes 1.0, 2.0 around the gaps; events send 1, 2
    categorical["y"] = rng.choice(["churn", "stay"], N)
    boolean = pd.DataFrame(
        {"returning": rng.random(N) < 0.4, "promo": rng.random(N) < 0.1, "basket": rng.normal(50, 10, N).round(2)}
    )
    boolean["promo"] = boolean["promo"].astype(object)
    boolean.loc[::6, "promo"] = None  # a bool column with gaps
    boolean["pred"] = np.where(rng.random(N) < 0.5, "buy", "leave")
    out = {}
    for name, df, args in (
        ("numeric", numeric, {"target": "y"}),
        ("categorical", categorical, {"target": "y"}),
        ("boolean", boolean, {"prediction": "pred"}),
    ):
        path = tmp_path / f"{name}.csv"
        df.to_csv(path, index=False)
        out[name] = (path, args)
    return out


def init(path: Path, args: dict, *extra: str) -> dict:
    cli_args = ["init", "--from-csv", str(path), "--window", "200", "-o", str(path.with_suffix(".yaml")), *extra]
    for k, v in args.items():
        cli_args += [f"--{k}", v]
    assert main(cli_args) == 0
    return yaml.safe_load(path.with_suffix(".yaml").read_text())


def test_kinds_ranges_categories_and_nullable_come_from_the_data(tmp_path, capsys):
    t = tables(tmp_path)
    num = init(*t["numeric"])["models"][0]
    assert num["model_id"] == "numeric" and num["task"] == "regression"
    assert num["reference"] == {"file": "numeric.csv", "label": "y"}
    f = {x["name"]: x for x in num["features"]}
    assert set(f) == {"temp", "load", "rpm"}  # the target is not a feature
    df = pd.read_csv(t["numeric"][0])
    assert f["temp"] == {"name": "temp", "kind": "numeric", "min": df["temp"].min(), "max": df["temp"].max()}
    assert f["rpm"]["nullable"] is False and f["rpm"]["min"] == df["rpm"].min()

    cat = init(*t["categorical"], "--ignore", "user")["models"][0]
    assert cat["task"] == "classification"
    f = {x["name"]: x for x in cat["features"]}
    assert set(f) == {"country", "plan", "tier"}
    assert f["country"]["kind"] == "categorical"
    assert f["country"]["allowed"] == ["DE", "FR", "NL", "PL"] and "nullable" not in f["country"]
    assert f["plan"] == {"name": "plan", "kind": "categorical", "allowed": ["free", "pro"], "nullable": False}
    assert f["tier"]["kind"] == "numeric"  # numbers stay numbers (1.0 and 2 alike)

    boo = init(*t["boolean"])["models"][0]
    f = {x["name"]: x for x in boo["features"]}
    assert f["returning"] == {"name": "returning", "kind": "boolean", "nullable": False}
    assert f["promo"] == {"name": "promo", "kind": "boolean"}  # has gaps: nullable
    assert boo["reference"] == {"file": "boolean.csv", "prediction": "pred"}
    capsys.readouterr()
    for name in t:
        assert main(["check-config", str(t[name][0].with_suffix(".yaml"))]) == 0
        assert f"ok  {name}:" in capsys.readouterr().out


def test_bad_input_is_explained(tmp_path, capsys):
    (tmp_path / "empty.csv").write_text("a,b\n")
    assert main(["init", "--from-csv", str(tmp_path / "empty.csv")]) == 1
    assert "at least one row" in capsys.readouterr().err
    (tmp_path / "t.csv").write_text("a,b\n1,2\n")
    assert main(["init", "--from-csv", str(tmp_path / "t.csv"), "--target", "y"]) == 1
    assert "--target 'y' is not a column" in capsys.readouterr().err
    (tmp_path / "monitors.yaml").write_text("keep me")
    assert main(["init", "--from-csv", str(tmp_path / "t.csv")]) == 1
    assert (tmp_path / "monitors.yaml").read_text() == "keep me" and "--force" in capsys.readouterr().err


def _events(model: dict, df: pd.DataFrame, target: str | None, prediction: str | None) -> bytes:
    """The table's rows as a column batch, typed as a serving app sends them (numbers, JSON booleans)."""
    n = len(df)
    feats = {}
    for f in model["features"]:
        col = df[f["name"]]
        feats[f["name"]] = [
            None
            if pd.isna(v)
            else (bool(v) if f["kind"] == "boolean" else (float(v) if f["kind"] == "numeric" else str(v)))
            for v in col
        ]
    if model["task"] == "regression":
        pred = {"value": df[target].astype(float).tolist()}
    else:
        pred = {"label": df[prediction or target].astype(str).tolist()}
    return orjson.dumps(
        {
            "schema_version": 1,
            "type": "inference_batch",
            "model_id": model["model_id"],
            "model_version": "1",
            "event_id": [f"{model['model_id']}-{i}" for i in range(n)],
            "event_time": [1.7e9 + i for i in range(n)],
            "features": feats,
            "prediction": pred,
        }
    )


@pytest.mark.integration
@pytest.mark.slow  # a worker on the inferred configs (~20 s)
def test_a_worker_runs_the_inferred_configs(settings, settings_env, tmp_path, capsys):
    from kafka import KafkaProducer

    from streams.influx.sink import query
    from tests.reliability.helpers import wait_for, windowed, worker

    t = tables(tmp_path)
    models = []
    producer = KafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, max_request_size=4 << 20, **settings.kafka_client_options()
    )
    for name, (path, args) in t.items():
        model = init(path, args, *(["--ignore", "user"] if name == "categorical" else []))["models"][0]
        models.append(model)
        df = pd.read_csv(path).sample(frac=1.0, random_state=1)  # the same rows in another order: no drift
        producer.send(
            settings.topic_inferences,
            key=name.encode(),
            value=_events(model, df, args.get("target"), args.get("prediction")),
        )
    producer.flush(30)
    producer.close(10)
    mon = tmp_path / "all.yaml"  # the three inferred models, as written, in one worker's config
    mon.write_text(yaml.safe_dump({"models": models}))
    assert main(["check-config", str(mon)]) == 0
    log = tmp_path / "worker.log"
    with worker(settings_env, mon, log) as proc:
        wait_for(
            lambda: True if windowed(settings) == 3 * N else windowed(settings),
            120,
            "every event of the three models in windows",
            [proc],
            log,
        )
    assert "reference file cannot be used" not in log.read_text()
    wins = query(settings, 'SELECT "n_events", "drift_evaluated", "model" FROM "dw_window"')
    assert {w["model"] for w in wins} == {"numeric", "categorical", "boolean"}
    assert all(w["drift_evaluated"] for w in wins)
    drift = query(settings, 'SELECT "drift", "feature", "model" FROM "dw_drift" WHERE "segment" = \'\'')
    tested = {(r["model"], r["feature"]) for r in drift}
    assert {("boolean", "returning"), ("boolean", "promo"), ("categorical", "tier"), ("numeric", "temp")} <= tested
    assert not [r for r in drift if r["drift"]], "the table's own rows drifted from the table"
    quality = query(settings, 'SELECT "type_error_rate", "feature" FROM "dw_quality"')
    assert quality and max(q["type_error_rate"] for q in quality) == 0  # events typed as inferred


def test_the_readme_snippet_sends_the_model_its_init_step_declares(tmp_path):
    """The README's producer snippet once sent a model no config declared (dead-lettered as unknown_model)."""
    import re

    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    section = readme[readme.index("## Add it to a serving app") : readme.index("## Configure a monitor")]
    csv_name = re.search(r"driftwatch init --from-csv (\S+)", section).group(1)
    sent = re.search(r'send_inference\("([^"]+)"', section).group(1)
    features = set(re.findall(r'"(\w+)": ', section.split("features=")[1].split("prediction=")[0]))
    path = tmp_path / csv_name
    pd.DataFrame(
        {
            "age": [41, 35],
            "income": [3200.0, 1.0],
            "plan": ["pro", "free"],
            "returning": [True, False],
            "churned": ["stay", "churn"],
        }
    ).to_csv(path, index=False)
    model = init(path, {"target": "churned"})["models"][0]
    assert model["model_id"] == sent
    assert features == {f["name"] for f in model["features"]}
