"""Logging of the dashboard process: secrets redacted, the dashboard's own lines on stderr.

:func:`setup` runs at the top of every script run of ``dashboard/app.py`` (cheap after the
first): it installs the worker's log redaction (:func:`streams.broker.security.redact_secrets_in_logs`)
for the secrets in the dashboard's settings — the dashboard password, InfluxDB password and
token, Kafka SASL password — so no log line of this process carries one, whatever logs it
(Streamlit's loggers, client libraries, tracebacks); and sets the ``dashboard.*`` loggers to
``DRIFTWATCH_LOG_LEVEL``, their lines going to stderr (a handler on the root logger, added
once, when nothing else handles it). Streamlit's own loggers follow the same level
(``driftwatch dashboard`` passes ``--logger.level``).

>>> from streams.settings import Settings
>>> s = Settings(dashboard_password="correct horse battery")
>>> setup(s) >= 1
True
>>> import logging
>>> logging.getLogRecordFactory()("x", logging.DEBUG, __file__, 1, "pw=%s", ("correct horse battery",), None).getMessage()
'pw=***'
"""

from __future__ import annotations

import logging
import threading
from typing import Any

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_lock = threading.Lock()
_handler: logging.Handler | None = None


def setup(settings: Any) -> int:
    """Redact ``settings``' secrets in every log record of this process, and let the
    ``dashboard`` loggers log at ``settings.log_level`` (to stderr, unless the process already
    routes the root logger somewhere). Returns how many values are redacted."""
    from streams.broker.security import redact_secrets_in_logs

    n = redact_secrets_in_logs(settings)
    global _handler
    with _lock:
        root = logging.getLogger()
        if _handler is None and not root.handlers:  # Streamlit's loggers have their own; the root has none
            _handler = logging.StreamHandler()  # stderr, like Streamlit's own lines
            _handler.setFormatter(logging.Formatter(FORMAT))
            root.addHandler(_handler)
        # the level of the dashboard's loggers only (the root stays at WARNING: no library noise)
        logging.getLogger("dashboard").setLevel(getattr(settings, "log_level", "INFO"))
    return n
