"""Shared helpers of the alert tests: config, window records, the documented verify snippet."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from detectors.records import DRIFT, Record
from streams.alerts.service import Alerting
from streams.settings import Settings
from streams.worker.monitors import parse_monitors

ROOT = Path(__file__).resolve().parents[3]
SECRET = "test-secret-9f8e7d"
SECRET_ENV = "DW_TEST_WEBHOOK_SECRET"
MINUTE = 60 * 10**9
T0 = 1_750_000_000 * 10**9


def documented_verify(source: str = "docs/alerts.md") -> Callable[..., bool]:
    """``verify_driftwatch_signature`` exactly as ``source`` (docs/alerts.md or README.md) prints it."""
    text = (ROOT / source).read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    (code,) = [b for b in blocks if "def verify_driftwatch_signature" in b]
    ns: dict[str, Any] = {}
    exec(compile(code, source, "exec"), ns)  # our own documentation
    return ns["verify_driftwatch_signature"]


def webhook(name: str, url: str, **kw: Any) -> dict[str, Any]:
    return {
        "name": name,
        "url": url,
        "secret_env": SECRET_ENV,
        "backoff_initial_seconds": 0.05,
        "backoff_max_seconds": 0.3,
        "timeout_seconds": 2,
        **kw,
    }


DRIFT_RULE = {
    "name": "feature_drift",
    "signal": "drift.p_value",
    "where": {"feature": "*"},
    "op": "<",
    "threshold": 0.01,
    "summary": "{feature} drifted on {model} v{version}: p={value:.3g}",
}


def make_alerting(tmp_path: Path, webhooks: list[dict], rules: list[dict] | None = None, **kw: Any) -> Alerting:
    cfg = parse_monitors(
        {
            "models": [
                {
                    "model_id": "m",
                    "features": [{"name": "a", "kind": "numeric"}],
                    "alerts": rules if rules is not None else [DRIFT_RULE],
                }
            ],
            "webhooks": webhooks,
            "dashboard_url": "http://dash.test:8501",
        }
    )
    settings = kw.pop("settings", None) or Settings(state_dir=tmp_path / "state")
    kw.setdefault("publish", False)
    return Alerting(cfg, settings, **kw)


def window(i: int, pvals: dict[str, float], model: str = "m", version: str = "1") -> list[Record]:
    """The Records of window ``i`` (ends at T0 + i minutes): one drift point per feature."""
    return [
        Record(
            DRIFT,
            {"model": model, "version": version, "feature": f, "detector": "ks"},
            {"p_value": p, "statistic": 0.1},
            T0 + i * MINUTE,
        )
        for f, p in pvals.items()
    ]


async def until(pred: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        await asyncio.sleep(0.02)
    return pred()
