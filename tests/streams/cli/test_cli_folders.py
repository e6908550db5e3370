"""A CLI that works from any folder (issue 18, part 5): one absolute state folder, no stray files,
``up --monitors/--worker-port``, the settings reference from the settings models, ``schema export``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def cli(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTWATCH_")}
    base["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *args],
        cwd=cwd,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_state_folder_is_one_absolute_path_from_any_folder(tmp_path, monkeypatch):
    from streams.settings import Settings, default_state_dir

    here = cli("stack", "status", "--json", cwd=ROOT)
    elsewhere = cli("stack", "status", "--json", cwd=tmp_path)
    a, b = json.loads(here.stdout)["state_dir"], json.loads(elsewhere.stdout)["state_dir"]
    assert a == b == str(ROOT / ".driftwatch") == str(default_state_dir())
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DRIFTWATCH_STATE_DIR", "rel/state")
    assert Settings().state_dir == tmp_path / "rel" / "state"  # a relative variable: resolved once, at load


def test_alerts_list_elsewhere_creates_no_stray_state_folder(tmp_path):
    store = tmp_path / "state"
    out = cli("alerts", "list", cwd=tmp_path, env={"DRIFTWATCH_STATE_DIR": str(store)})
    assert out.returncode == 0 and "no alerts" in out.stdout, out.stderr
    assert not (tmp_path / ".driftwatch").exists() and not store.exists()
    out = cli("alerts", "list", cwd=tmp_path)  # the project default, from another folder
    assert out.returncode == 0, out.stderr
    assert not (tmp_path / ".driftwatch").exists()


@pytest.mark.integration
def test_stack_status_from_another_folder_sees_the_running_stack(stack, tmp_path):
    env = {
        "DRIFTWATCH_STATE_DIR": str(stack.state_dir),
        "DRIFTWATCH_KAFKA_PORT": str(stack.kafka_port),
        "DRIFTWATCH_INFLUX_PORT": str(stack.influx_port),
    }
    for cwd in (tmp_path, ROOT):
        status = json.loads(cli("stack", "status", "--json", cwd=cwd, env=env).stdout)
        assert all(s["running"] for s in status["services"].values()), (cwd, status)
        assert status["state_dir"] == str(stack.state_dir)


def test_up_takes_monitors_and_worker_port(tmp_path):
    import argparse

    from streams.devstack import up

    parser = argparse.ArgumentParser()
    up.add_arguments(parser)
    (tmp_path / "mine.yaml").write_text("models: []\n")
    args = parser.parse_args(["--monitors", "mine.yaml", "--worker-port", "6099", "--state-dir", str(tmp_path)])
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        s = up.local_settings(args)
    finally:
        os.chdir(cwd)
    assert s.monitors == tmp_path / "mine.yaml" and s.worker_web_port == 6099 and s.state_dir == tmp_path


def test_settings_reference_covers_every_settings_model_and_matches_the_docs():
    from dashboard.config import DashboardSettings
    from streams.cli.settings import reference_table

    table = reference_table()
    for name in DashboardSettings.model_fields:
        assert f"`DRIFTWATCH_{name.upper()}`" in table
    for name in ("AUTH", "ACCESS", "REFRESH_SECONDS", "CACHE_SECONDS"):
        assert f"`DRIFTWATCH_DASHBOARD_{name}`" in table
    assert table in (ROOT / "docs" / "operations.md").read_text(), "regenerate with: driftwatch settings --reference"


def test_schema_export_without_dir_prints_and_writes_nothing(tmp_path):
    out = cli("schema", "export", cwd=tmp_path)
    assert out.returncode == 0 and list(tmp_path.iterdir()) == []
    schemas = json.loads(out.stdout)
    assert set(schemas) == {
        p.name.removesuffix(".schema.json") for p in (ROOT / "streams" / "wire" / "schemas").iterdir()
    }
    out = cli("schema", "export", "out", cwd=tmp_path)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        p.name for p in (ROOT / "streams" / "wire" / "schemas").iterdir()
    )
