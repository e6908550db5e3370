"""Dashboard settings: the service :class:`~streams.settings.Settings` plus a few knobs.

The dashboard reads the same ``DRIFTWATCH_*`` environment as the worker (InfluxDB
address, database, credentials, ``dashboard_port``, ``dashboard_address``,
``dashboard_password``). The knobs that only the dashboard uses live here, so the
service settings stay small:

``DRIFTWATCH_DASHBOARD_REFRESH_SECONDS``
    auto-refresh period of every page (0 turns it off; default 30).
``DRIFTWATCH_DASHBOARD_CACHE_SECONDS``
    how long a query result is reused (default 10).
``DRIFTWATCH_DASHBOARD_AUTH``
    ``auto`` (default: ``password`` when a password is set, ``oidc`` when
    ``.streamlit/secrets.toml`` has an ``[auth]`` section, else ``none``),
    or one of ``none``, ``password``, ``oidc``.
``DRIFTWATCH_DASHBOARD_ACCESS``
    optional YAML file: which models each user may see (see :mod:`dashboard.auth`).

>>> DashboardSettings(dashboard_refresh_seconds=0).dashboard_refresh_seconds
0.0
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from streams.settings import Settings

if TYPE_CHECKING:  # the pydantic models load lazily (~0.3 s), when a page first reads the config
    from streams.worker.monitors import ModelMonitor, MonitorsConfig

log = logging.getLogger(__name__)


# page key -> (script relative to app.py, title, icon, URL path); the overview is the root URL
PAGES: dict[str, tuple[str, str, str, str]] = {
    "overview": ("views/overview.py", "Overview", ":material/monitor_heart:", "overview"),
    "drift": ("views/drift.py", "Data drift", ":material/stacked_line_chart:", "drift"),
    "quality": ("views/quality.py", "Data quality", ":material/rule:", "quality"),
    "performance": ("views/performance.py", "Concept drift & performance", ":material/speed:", "performance"),
    "adversarial": ("views/adversarial.py", "Adversarial", ":material/shield:", "adversarial"),
    "alerts": ("views/alerts.py", "Alerts", ":material/notifications_active:", "alerts"),
}


class DashboardSettings(Settings):
    """Service settings plus the dashboard's own (same ``DRIFTWATCH_`` prefix)."""

    dashboard_refresh_seconds: float = Field(30.0, ge=0, description="auto-refresh period; 0 = off")
    dashboard_cache_seconds: float = Field(10.0, ge=0, description="query results are reused this long")
    dashboard_auth: Literal["auto", "none", "password", "oidc"] = Field(
        "auto", description="auto: password when one is set, oidc when .streamlit/secrets.toml has [auth], else none"
    )
    dashboard_access: Path | None = Field(None, description="YAML: models each user may see")


def load_settings() -> DashboardSettings:
    """Settings from the environment, read fresh (cheap: ~1 ms)."""
    return DashboardSettings()


_lock = threading.Lock()
_cache: dict[tuple[str, float], MonitorsConfig | None] = {}


def monitor_config(path: Path | str | None) -> MonitorsConfig | None:
    """The whole monitor config at ``path``, or None when
    there is no path or the file cannot be read or validated (logged once per file version).
    Parsed once per version of the file (its mtime)."""
    if path is None:
        return None
    p = Path(path)
    try:
        key = (str(p.resolve()), os.stat(p).st_mtime)
    except OSError:
        return None
    with _lock:
        if key in _cache:
            return _cache[key]
    from streams.worker.monitors import ConfigError, load_monitors  # pydantic models, ~0.3 s once

    cfg: MonitorsConfig | None
    try:
        cfg = load_monitors(p)
    except ConfigError as e:
        log.warning("dashboard: cannot read the monitor config %s: %s", p, e)
        cfg = None
    with _lock:
        _cache.clear()  # one file version at a time
        _cache[key] = cfg
    return cfg


def monitor_model(path: Path | str | None, model: str) -> ModelMonitor | None:
    """The model's entry in the monitor config at ``path``,
    or None when the file cannot be read or validated or the model is not in it."""
    cfg = monitor_config(path)
    return cfg.model(model) if cfg is not None else None
