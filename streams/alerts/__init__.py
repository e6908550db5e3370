"""Alerting: rules on stored signals, a pending → firing → resolved lifecycle, silences,
and signed, retried webhook delivery that never blocks detection.

The worker uses :class:`Alerting` (see :mod:`streams.alerts.service`); the monitor config
uses :class:`AlertRule`, :class:`WebhookConfig` and :class:`SilenceConfig`; receivers
verify signatures with :func:`verify_signature`. User documentation: docs/alerts.md.
"""

from streams.alerts.rules import AlertRule, RuleError, SilenceConfig, WebhookConfig, evaluate
from streams.alerts.signing import sign, verify_signature

__all__ = [
    "AlertRule",
    "Alerting",
    "RuleError",
    "SilenceConfig",
    "WebhookConfig",
    "evaluate",
    "sign",
    "verify_signature",
]


def __getattr__(name: str):  # Alerting pulls in httpx and the store: import it on first use
    if name == "Alerting":
        from streams.alerts.service import Alerting

        return Alerting
    raise AttributeError(name)
