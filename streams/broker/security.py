"""Kafka transport security from :class:`~streams.settings.Settings`, in each client's spelling.

driftwatch creates Kafka clients with three libraries, and each spells TLS and
SASL differently:

* **kafka-python** (producer SDK, admin, test consumers): ``security_protocol``,
  ``sasl_mechanism``, ``sasl_plain_username``/``sasl_plain_password`` (also
  used for SCRAM), ``ssl_cafile`` — :func:`kafka_python_options`
  (= ``Settings.kafka_client_options()``);
* **aiokafka** (reference store, alert publisher): the same names, but TLS
  needs an ``ssl_context`` (``ssl_cafile`` is a TypeError there, and a missing
  context a ValueError) — :func:`aiokafka_options`;
* **Faust** (the worker): one ``broker_credentials`` object —
  :func:`faust_credentials`.

The settings (environment variables, secrets also from ``*_FILE``)::

    DRIFTWATCH_KAFKA_SECURITY_PROTOCOL   PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL
    DRIFTWATCH_KAFKA_SASL_MECHANISM      PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512
    DRIFTWATCH_KAFKA_SASL_USERNAME
    DRIFTWATCH_KAFKA_SASL_PASSWORD       (or DRIFTWATCH_KAFKA_SASL_PASSWORD_FILE)
    DRIFTWATCH_KAFKA_SSL_CAFILE          CA bundle (PEM); default: the system's

:func:`check` refuses incomplete combinations with a message naming the
variable to set; :func:`describe` says what is in force without the password.

>>> from streams.settings import Settings
>>> describe(Settings(kafka_security_protocol="SASL_SSL", kafka_sasl_username="svc",
...                   kafka_sasl_password="pw", kafka_sasl_mechanism="SCRAM-SHA-512"))
'SASL_SSL (SCRAM-SHA-512 as user svc, server certificate checked against the system CAs)'
"""

from __future__ import annotations

import ssl
from typing import Any

from detectors.errors import ConfigurationError
from streams.settings import Settings


class SecurityConfigError(ConfigurationError):
    """The Kafka security settings are incomplete or unusable; the message says which variable to set."""


def uses_tls(settings: Settings) -> bool:
    return settings.kafka_security_protocol in ("SSL", "SASL_SSL")


def uses_sasl(settings: Settings) -> bool:
    return settings.kafka_security_protocol in ("SASL_PLAINTEXT", "SASL_SSL")


def check(settings: Settings) -> None:
    """Raise :class:`SecurityConfigError` for settings no client could connect with."""
    if uses_sasl(settings):
        missing = []
        if not settings.kafka_sasl_username:
            missing.append("DRIFTWATCH_KAFKA_SASL_USERNAME")
        if settings.kafka_sasl_password is None:
            missing.append("DRIFTWATCH_KAFKA_SASL_PASSWORD (or DRIFTWATCH_KAFKA_SASL_PASSWORD_FILE)")
        if missing:
            raise SecurityConfigError(
                f"DRIFTWATCH_KAFKA_SECURITY_PROTOCOL={settings.kafka_security_protocol} needs " + " and ".join(missing)
            )
    if uses_tls(settings) and settings.kafka_ssl_cafile is not None:
        path = settings.kafka_ssl_cafile
        if not path.is_file():
            raise SecurityConfigError(f"DRIFTWATCH_KAFKA_SSL_CAFILE={path}: no such file")


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """A client TLS context (server certificate and host name checked), or None without TLS."""
    if not uses_tls(settings):
        return None
    check(settings)
    cafile = str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None
    try:
        return ssl.create_default_context(cafile=cafile)
    except (ssl.SSLError, OSError) as e:
        raise SecurityConfigError(f"DRIFTWATCH_KAFKA_SSL_CAFILE={cafile}: not a usable CA bundle ({e})") from None


def _password(settings: Settings) -> str | None:
    return settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else None


def kafka_python_options(settings: Settings) -> dict[str, Any]:
    """Options for kafka-python's producer, consumer and admin client."""
    check(settings)
    return settings.kafka_client_options()


def aiokafka_options(settings: Settings) -> dict[str, Any]:
    """Options for aiokafka's producer and consumer (TLS as an ``ssl_context``)."""
    check(settings)
    opts: dict[str, Any] = {"security_protocol": settings.kafka_security_protocol}
    if uses_sasl(settings):
        opts["sasl_mechanism"] = settings.kafka_sasl_mechanism
        opts["sasl_plain_username"] = settings.kafka_sasl_username
        opts["sasl_plain_password"] = _password(settings)
    if uses_tls(settings):
        opts["ssl_context"] = ssl_context(settings)
    return opts


def faust_credentials(settings: Settings):
    """``broker_credentials`` for :class:`faust.App` (None for PLAINTEXT)."""
    import faust  # only the worker needs Faust

    check(settings)
    ctx = ssl_context(settings)
    if uses_sasl(settings):
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username or "",
            password=_password(settings) or "",
            mechanism=settings.kafka_sasl_mechanism,
            ssl_context=ctx,
        )
    return ctx


def describe(settings: Settings) -> str:
    """What is in force, for logs (never the password)."""
    proto = settings.kafka_security_protocol
    parts = []
    if uses_sasl(settings):
        parts.append(f"{settings.kafka_sasl_mechanism} as user {settings.kafka_sasl_username}")
    if uses_tls(settings):
        ca = settings.kafka_ssl_cafile
        parts.append(
            f"server certificate checked against {ca}" if ca else "server certificate checked against the system CAs"
        )
    return proto + (f" ({', '.join(parts)})" if parts else "")


# ----------------------------------------------------------------------------- log redaction

REDACTED = "***"
_redact_values: set[str] = set()
_factory_installed = False


def secret_values(settings: Settings, monitors: Any = None) -> set[str]:
    """Every secret value in force: SecretStr settings, webhook secrets and secret URLs (from env/files)."""
    out: set[str] = set()
    for name in type(settings).model_fields:
        v = getattr(settings, name)
        if hasattr(v, "get_secret_value"):
            out.add(v.get_secret_value())
    for hook in getattr(monitors, "webhooks", None) or ():
        for getter in ("resolve_secret", "resolve_url"):
            if getter == "resolve_url" and getattr(hook, "url_env", None) is None:
                continue  # a URL written in the config file is not a secret
            try:
                v = getattr(hook, getter)()
            except (ValueError, OSError):  # a RuleError (unset variable, unreadable file), an undecodable
                continue  # file: the alerting code reports it
            out.add(v.decode() if isinstance(v, bytes) else str(v))
    return {v for v in out if v and len(v) >= 4}  # too short to redact safely ("a" would mangle every line)


def redact(text: str) -> str:
    """``text`` with every registered secret replaced by ``***``."""
    for v in _redact_values:
        if v in text:
            text = text.replace(v, REDACTED)
    return text


def redact_secrets_in_logs(settings: Settings, monitors: Any = None) -> int:
    """Make every log record of this process carry ``***`` instead of a secret value.

    Client libraries log their configuration and wire bytes at DEBUG (kafka-python
    prints ``sasl_plain_password`` and the SASL/PLAIN token). The redaction sits in
    the log-record factory, so it survives Faust replacing the handlers, and covers
    messages, arguments and exception tracebacks. Returns how many values are redacted.
    """
    global _factory_installed
    import logging
    import traceback

    _redact_values.update(secret_values(settings, monitors))
    if not _factory_installed:
        previous = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            if not _redact_values:
                return record
            try:
                message = record.getMessage()
            except Exception:  # a broken format string: leave it to the handler
                return record
            clean = redact(message)
            if clean != message:
                record.msg, record.args = clean, None
            if record.exc_info and record.exc_info[0] is not None:
                text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
                record.exc_text = redact(text)
            return record

        logging.setLogRecordFactory(factory)
        _factory_installed = True
    return len(_redact_values)
