"""Service settings from the environment (prefix ``DRIFTWATCH_``) via pydantic-settings.

The defaults are the local stack's: broker and InfluxDB on loopback, state in the
project's ``.driftwatch`` folder (:func:`default_state_dir`), resolved once to an absolute
path so every command finds the same stack and stores from any folder. Production sets the same names (see ``.env.example``).
Secrets are :class:`~pydantic.SecretStr` and may also come from files:
``DRIFTWATCH_INFLUX_PASSWORD_FILE=/run/secrets/influx`` reads the file.

>>> Settings(kafka_bootstrap="k:9092").kafka_bootstrap
'k:9092'
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: the fields that hold secrets; each may also come from ``DRIFTWATCH_<NAME>_FILE``
#: the local stack's InfluxDB admin user (:mod:`streams.devstack.localstack` creates it); its password is
#: generated into :data:`INFLUX_PASSWORD_FILE` under the state folder. Here, not in the local stack's
#: module, because :meth:`Settings._local_stack_credential` reads them and settings import nothing of ours.
INFLUX_ADMIN = "driftwatch"
INFLUX_PASSWORD_FILE = Path("secrets") / "influx_password"

SECRET_FIELDS = ("kafka_sasl_password", "influx_password", "influx_token", "dashboard_password")


class Settings(BaseSettings):
    """Everything a worker, the dashboard and the CLI need to find their services."""

    # hide_input_in_errors: a validation error would otherwise print the input dict, secrets included
    model_config = SettingsConfigDict(env_prefix="DRIFTWATCH_", extra="ignore", hide_input_in_errors=True)

    # Kafka ---------------------------------------------------------------------
    kafka_bootstrap: str = Field("127.0.0.1:19092", description="bootstrap servers, comma separated")
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None
    topic_inferences: str = "driftwatch.inferences"
    topic_labels: str = "driftwatch.labels"
    topic_deadletter: str = "driftwatch.deadletter"
    topic_alerts: str = "driftwatch.alerts"
    topic_partitions: int = Field(4, ge=1, description="partitions created for each topic")
    consumer_group: str = "driftwatch"
    max_message_bytes: int = Field(1_000_000, ge=1024, description="larger messages are dead-lettered")

    # InfluxDB --------------------------------------------------------------------
    influx_version: int = Field(
        1, ge=1, le=2, description="1: InfluxDB 1.x (database, user/password); 2: InfluxDB 2.x (org, bucket, token)"
    )
    influx_url: str = "http://127.0.0.1:18086"
    influx_db: str = Field("driftwatch", description="1.x database (2.x: bucket via v1 mapping)")
    influx_username: str | None = None
    influx_password: SecretStr | None = None
    influx_token: SecretStr | None = Field(None, description="2.x API token")
    influx_org: str | None = None
    influx_bucket: str | None = None

    # Worker ------------------------------------------------------------------------
    monitors: Path = Field(
        Path(__file__).parent / "devstack" / "examples" / "demo.yaml", description="monitor config (YAML)"
    )
    detector_process: bool = Field(
        True,
        description="run the detectors in a child process of the worker (another core than decoding); "
        "false: on a thread of the worker process",
    )
    worker_web_port: int = Field(6066, ge=0, le=65535)
    worker_fetch_stall_seconds: float = Field(
        30.0,
        ge=0,
        description="an assigned partition with a backlog that had no fetch for this long is logged as an ERROR, "
        "once per episode (Faust's own check for it never fires); 0: off",
    )
    worker_shutdown_timeout_seconds: float = Field(
        10.0,
        gt=0,
        description="the worker's orderly shutdown (checkpoints, flushes) gets this long after SIGTERM/SIGINT or "
        "its parent's death; then it logs what it waited for, kills its detector process and exits with code 124",
    )

    # Local stack / dashboard ---------------------------------------------------------
    state_dir: Path = Field(
        default_factory=lambda: default_state_dir(),
        description="state folder of the local stack, alert store and caches (absolute once "
        "loaded; default: the project's .driftwatch)",
    )
    kafka_port: int = Field(19092, ge=1, le=65535)
    influx_port: int = Field(18086, ge=1, le=65535)
    dashboard_port: int = Field(8501, ge=1, le=65535)
    dashboard_address: str = Field("127.0.0.1", description="interface the dashboard binds (0.0.0.0 in containers)")
    dashboard_password: SecretStr | None = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @model_validator(mode="before")
    @classmethod
    def _secret_files(cls, data: Any) -> Any:
        """``DRIFTWATCH_<NAME>_FILE`` holds the path of a file with the secret's value."""
        if not isinstance(data, dict):
            return data
        for name in SECRET_FIELDS:
            path = os.environ.get(f"DRIFTWATCH_{name.upper()}_FILE")
            if path and name not in data:
                try:
                    data[name] = Path(path).read_text().strip()
                except OSError as e:  # name the variable, never the content
                    raise ValueError(
                        f"DRIFTWATCH_{name.upper()}_FILE={path}: cannot read the secret file ({e.strerror})"
                    ) from None
        return data

    @field_validator("state_dir")
    @classmethod
    def _absolute_state_dir(cls, v: Path) -> Path:
        """Resolved once, when the settings load: a relative DRIFTWATCH_STATE_DIR is taken from the folder the
        command started in, and every later use (children, other folders) sees the same absolute path."""
        return Path(v).expanduser().resolve()

    @model_validator(mode="after")
    def _local_stack_credential(self) -> Settings:
        """No InfluxDB credential configured and ``influx_url`` is this state folder's local
        stack: use the admin credential the stack generated (``<state_dir>/secrets/influx_password``),
        so ``driftwatch worker`` after ``driftwatch stack up`` works as before auth was on."""
        if self.influx_username or self.influx_token is not None or self.influx_version != 1:
            return self
        if self.influx_url.rstrip("/") != f"http://127.0.0.1:{self.influx_port}":
            return self
        try:
            password = (Path(self.state_dir) / INFLUX_PASSWORD_FILE).read_text().strip()
        except OSError:
            return self
        if password:
            self.influx_username = INFLUX_ADMIN
            self.influx_password = SecretStr(password)
        return self

    def kafka_client_options(self) -> dict[str, Any]:
        """Security options in kafka-python/aiokafka spelling (empty for PLAINTEXT)."""
        opts: dict[str, Any] = {"security_protocol": self.kafka_security_protocol}
        if self.kafka_security_protocol.startswith("SASL"):
            opts["sasl_mechanism"] = self.kafka_sasl_mechanism
            opts["sasl_plain_username"] = self.kafka_sasl_username
            opts["sasl_plain_password"] = (
                self.kafka_sasl_password.get_secret_value() if self.kafka_sasl_password else None
            )
        if self.kafka_security_protocol.endswith("SSL") and self.kafka_ssl_cafile:
            opts["ssl_cafile"] = str(self.kafka_ssl_cafile)
        return opts


def default_state_dir() -> Path:
    """The project's state folder: ``.driftwatch`` in the driftwatch checkout when it runs from its source
    (where ``./run.sh`` keeps the local stack), else ``~/.driftwatch`` (an installed package).

    Not the current folder: ``driftwatch stack status`` run elsewhere must see the running stack, and
    ``driftwatch alerts list`` elsewhere must not create a stray ``./.driftwatch``.
    """
    root = Path(__file__).resolve().parent.parent
    if (root / "pyproject.toml").is_file() and (root / "streams").is_dir():
        return root / ".driftwatch"
    return Path.home() / ".driftwatch"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
