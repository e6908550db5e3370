"""driftwatch's exceptions: one root, a few families, no I/O.

Every exception driftwatch raises on purpose derives from :class:`DriftwatchError`,
through one of the families below, so a caller can catch "anything driftwatch
refused" (``except DriftwatchError``) or one kind of failure (``except
ServiceError``) without knowing which module raised it. Each family also keeps
the builtin base its members always had (``ValueError`` for bad input or
configuration, ``RuntimeError`` for failures at run time), so existing
``except ValueError`` / ``except RuntimeError`` handlers behave as before.

This module lives in ``detectors/`` because ``detectors/`` may import nothing
from ``streams/`` or ``dashboard/``; it imports nothing itself, so the producer
SDK and the dashboard can use it without pulling numpy or scipy in.

The families and their members:

* :class:`ConfigurationError` (``ValueError``): a setting, a monitor / rule /
  security / access file, or a budget that cannot work — ``streams.worker.monitors.ConfigError``,
  ``streams.broker.security.SecurityConfigError``, ``streams.influx.sink.InfluxConfigError``,
  ``streams.alerts.rules.RuleError``, ``dashboard.auth.AccessError``,
  ``detectors.budget.BudgetExhausted``;
* :class:`InvalidInputError` (``ValueError``): data or arguments a detector cannot
  use — ``detectors.reference.ReferenceDataError``, ``detectors.online.CalibrationError``,
  ``detectors.histograms.HistogramMismatch``, ``detectors.adversarial.squeeze.SqueezeModelError``,
  ``detectors.summaries.SummaryError``;
* :class:`EngineUnavailable` (``RuntimeError``): an optional engine (alibi-detect,
  PyTorch, TensorFlow) cannot run here;
* :class:`DetectorFailure` (``RuntimeError``): a detector or evaluator failed on
  data it accepted — ``detectors.runner.WindowEvaluationError``,
  ``detectors.adversarial.evaluator.AdversarialFitError``;
* :class:`ServiceError` (``RuntimeError``): a service (Kafka broker, InfluxDB, the
  alert sink, the local stack, Chromium) refused or could not be reached —
  ``streams.broker.admin.TopicError``, ``streams.influx.sink.InfluxQueryError``,
  ``streams.influx.admin.InfluxAdminError``, ``dashboard.queries.InfluxError``,
  ``streams.devstack.localstack.StackError``, ``streams.alerts.sink.SinkError``,
  ``dashboard.browser.BrowserError``;
* :class:`StorageError` (``RuntimeError``): kept state (the reference topic, the
  alert store) cannot be read or written — ``streams.worker.references.ReferenceStoreError``,
  ``streams.alerts.store.StoreError``.

``streams.cli.reference.CliError`` (a message for the terminal and an exit code)
derives from the root directly.

>>> issubclass(InvalidInputError, ValueError) and issubclass(InvalidInputError, DriftwatchError)
True
"""

from __future__ import annotations

__all__ = [
    "ConfigurationError",
    "DetectorFailure",
    "DriftwatchError",
    "EngineUnavailable",
    "InvalidInputError",
    "ServiceError",
    "StorageError",
]


class DriftwatchError(Exception):
    """The root of every exception driftwatch raises on purpose; the message says what and why."""


class ConfigurationError(DriftwatchError, ValueError):
    """A setting or a config file (monitors, rules, security, access) cannot work as given."""


class InvalidInputError(DriftwatchError, ValueError):
    """Data or arguments a detector cannot use (the message names the field or file)."""


class EngineUnavailable(DriftwatchError, RuntimeError):
    """The requested engine cannot run here (e.g. alibi-detect's MMD or Mahalanobis without
    TensorFlow/PyTorch); the native engine can."""


class DetectorFailure(DriftwatchError, RuntimeError):
    """A detector or evaluator failed on input it accepted."""


class ServiceError(DriftwatchError, RuntimeError):
    """A service (broker, InfluxDB, webhook sink, local stack, browser) refused or could not be reached."""


class StorageError(DriftwatchError, RuntimeError):
    """Kept state (the reference topic, the alert store) cannot be read or written."""
