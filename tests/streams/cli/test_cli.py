"""The ``driftwatch`` command router: routing, help, and secrets kept out of every command's logs."""

from __future__ import annotations

import logging
import subprocess
import sys

from streams import cli

PASSWORD = "cli-Sasl-Pw-83c1f0aa"


def test_every_command_is_listed_in_the_help():
    out = subprocess.run([sys.executable, "-m", "streams.cli", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    for name in cli.COMMANDS:
        assert name in out.stdout


def test_unknown_command_is_an_error():
    out = subprocess.run([sys.executable, "-m", "streams.cli", "nope"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "invalid choice" in out.stderr


def test_any_command_redacts_the_settings_secrets_in_its_logs(monkeypatch, tmp_path, caplog):
    """Not only the worker: after any command starts, a client library logging the SASL password
    at DEBUG (kafka-python does) logs ``***`` instead."""
    monkeypatch.setenv("DRIFTWATCH_KAFKA_SASL_PASSWORD", PASSWORD)
    monkeypatch.setenv("DRIFTWATCH_STATE_DIR", str(tmp_path))
    bad = tmp_path / "monitors.yaml"
    bad.write_text("models: []\n")
    assert cli.main(["check-config", str(bad)]) != 0  # an ordinary command, failing on its own input
    with caplog.at_level(logging.DEBUG, logger="kafka.conn"):
        logging.getLogger("kafka.conn").debug("sasl_plain_password=%s", PASSWORD)
    assert PASSWORD not in caplog.text and "***" in caplog.text
