"""The production stack files agree with the code (no Docker engine needed).

Parses docker-compose.yml, the Dockerfile and .env.example and checks them
against the settings model, the CLI and pyproject.toml, so a renamed setting,
command or package fails here rather than in someone's deployment.
"""

from __future__ import annotations

import argparse
import importlib
import re
import tomllib
from pathlib import Path

import pytest
import yaml

from streams.cli import COMMANDS, DEFAULT_EXTRA, EXTRAS
from streams.cli.settings import reference_table
from streams.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
DOCKERFILE = (ROOT / "Dockerfile").read_text()
ENV_EXAMPLE = (ROOT / ".env.example").read_text()
SERVICES = COMPOSE["services"]
VAR = re.compile(r"\$\{([A-Z0-9_]+)(?::-([^}]*))?\}")


def _setting_names() -> set[str]:
    names = {f"DRIFTWATCH_{n.upper()}" for n in Settings.model_fields}
    secret = {n for n, f in Settings.model_fields.items() if "SecretStr" in str(f.annotation)}
    return names | {f"DRIFTWATCH_{n.upper()}_FILE" for n in secret}


def _resolve(value: str) -> str:
    """Substitute ${VAR:-default} by its default, as compose does with no .env."""
    return VAR.sub(lambda m: m.group(2) or "", str(value))


def test_services_present() -> None:
    assert {"kafka", "influxdb", "worker", "dashboard", "demo"} <= set(SERVICES)
    assert SERVICES["demo"].get("profiles") == ["demo"], "demo traffic is an optional profile"


def test_kafka_is_official_image_in_kraft_mode() -> None:
    kafka = SERVICES["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = kafka["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert "CONTROLLER" in env["KAFKA_CONTROLLER_LISTENER_NAMES"]


def test_influxdb_2_initialised_with_org_bucket_token() -> None:
    influx = SERVICES["influxdb"]
    assert influx["image"].startswith("influxdb:2")
    env = influx["environment"]
    assert env["DOCKER_INFLUXDB_INIT_MODE"] == "setup"
    for key in ("ORG", "BUCKET", "ADMIN_TOKEN_FILE", "USERNAME", "PASSWORD_FILE"):
        assert f"DOCKER_INFLUXDB_INIT_{key}" in env
    # the workers' bucket is the one InfluxDB is initialised with
    worker_env = {k: _resolve(v) for k, v in SERVICES["worker"]["environment"].items()}
    assert worker_env["DRIFTWATCH_INFLUX_BUCKET"] == _resolve(env["DOCKER_INFLUXDB_INIT_BUCKET"])
    assert worker_env["DRIFTWATCH_INFLUX_VERSION"] == "2"


def test_two_worker_replicas() -> None:
    assert int(_resolve(SERVICES["worker"]["deploy"]["replicas"])) == 2


def test_healthchecks_on_long_running_services() -> None:
    for name in ("kafka", "influxdb", "worker", "dashboard"):
        assert "healthcheck" in SERVICES[name], f"{name} has no healthcheck"


def test_ports_bound_to_localhost_only() -> None:
    for name, svc in SERVICES.items():
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on all interfaces"


def test_named_volumes_declared() -> None:
    declared = set(COMPOSE.get("volumes", {}))
    for name, svc in SERVICES.items():
        for vol in svc.get("volumes", []):
            src = _resolve(str(vol)).split(":")[0]
            if not src.startswith((".", "/")):
                assert src in declared, f"{name} uses undeclared volume {src}"


def test_dashboard_port_matches_settings() -> None:
    dash = SERVICES["dashboard"]
    env = {k: _resolve(v) for k, v in dash["environment"].items()}
    published = {str(p).split(":")[-1] for p in dash["ports"]}
    assert env["DRIFTWATCH_DASHBOARD_PORT"] in published
    assert Settings(**{"dashboard_port": int(env["DRIFTWATCH_DASHBOARD_PORT"])}).dashboard_port == 8501


def _all_env_names() -> set[str]:
    names: set[str] = set()
    for svc in SERVICES.values():
        names |= set(svc.get("environment", {}) or {})
    names |= set(COMPOSE.get("x-driftwatch-env", {}))
    names |= {line.split("=", 1)[0] for line in ENV_EXAMPLE.splitlines() if "=" in line and not line.startswith("#")}
    names |= set(re.findall(r"\b(DRIFTWATCH_[A-Z0-9_]+)", DOCKERFILE))
    names |= {m.group(1) for m in VAR.finditer((ROOT / "docker-compose.yml").read_text())}
    return names


def test_every_driftwatch_variable_is_a_setting() -> None:
    unknown = {n for n in _all_env_names() if n.startswith("DRIFTWATCH_")} - _setting_names()
    assert not unknown, f"not fields of streams.settings.Settings: {sorted(unknown)}"


def test_compose_settings_validate() -> None:
    env = {k: _resolve(v) for k, v in COMPOSE["x-driftwatch-env"].items()}
    fields = {k.removeprefix("DRIFTWATCH_").lower(): v for k, v in env.items() if not k.endswith("_FILE")}
    s = Settings(**fields)
    assert s.influx_version == 2 and s.influx_url == "http://influxdb:8086"


def _check_command(command: list[str]) -> None:
    assert command[0] == "driftwatch"
    name, rest = command[1], command[2:]
    assert name in COMMANDS, f"unknown driftwatch command {name!r}"
    module = importlib.import_module(COMMANDS[name][0])
    parser = argparse.ArgumentParser(prog=f"driftwatch {name}")
    module.add_arguments(parser)
    parser.parse_args(rest)  # exits (SystemExit) on an unknown flag


@pytest.mark.parametrize("service", ["worker", "dashboard", "demo"])
def test_service_commands_exist(service: str) -> None:
    _check_command(SERVICES[service]["command"])


def test_dockerfile_slim_nonroot_layered() -> None:
    assert re.search(r"^FROM python:3\.11-slim", DOCKERFILE, re.M)
    users = re.findall(r"^USER (\S+)", DOCKERFILE, re.M)
    assert users and users[-1] not in ("root", "0")
    deps = DOCKERFILE.index("COPY pyproject.toml")
    first_src = DOCKERFILE.index("COPY streams")
    install = DOCKERFILE.index('pip install ".[${DW_EXTRAS}]"')
    assert deps < install < first_src, "dependencies must be installed in a layer before the sources"


def test_image_installs_the_extras_its_services_need() -> None:
    """The image runs the worker, the dashboard and the demo: a base install has only the SDK."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    extras = pyproject["project"]["optional-dependencies"]
    default = re.search(r"^ARG DW_EXTRAS=(\S+)", DOCKERFILE, re.M)
    built = _resolve(SERVICES["worker"]["build"]["args"]["DW_EXTRAS"])
    for given in (default.group(1) if default else "", built):
        assert {"worker", "dashboard"} <= set(given.split(",")) <= set(extras), given
    for name in ("worker", "dashboard", "demo"):
        command = SERVICES[name]["command"][1]
        needed = EXTRAS.get(command, DEFAULT_EXTRA)
        assert needed in ("worker", "dashboard"), f"{name}: driftwatch {command} needs [{needed}]"


def test_dockerfile_copies_every_package() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]}
    for pkg in packages:
        assert re.search(rf"^COPY {pkg} ", DOCKERFILE, re.M), f"Dockerfile does not copy {pkg}/"


def test_secrets_come_from_files() -> None:
    for name, svc in SERVICES.items():
        for key, value in (svc.get("environment") or {}).items():
            if any(s in key for s in ("PASSWORD", "TOKEN", "SECRET")):
                assert key.endswith("_FILE"), f"{name}: {key} must point at a secret file"
                assert str(value).startswith("/run/secrets/")


def test_operations_guide_has_current_settings_reference() -> None:
    guide = (ROOT / "docs" / "operations.md").read_text()
    assert reference_table() in guide, "regenerate with: driftwatch settings --reference"
