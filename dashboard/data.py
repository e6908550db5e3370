"""The queries of :mod:`dashboard.queries`, cached briefly with ``st.cache_data``.

Results are reused for ``DRIFTWATCH_DASHBOARD_CACHE_SECONDS`` (default 10 s, read
when the dashboard starts; 0 turns caching off), shared by every session: ten people watching the
same model cost InfluxDB one query per chart per period. Errors are not cached.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import streamlit as st
from streamlit.runtime.scriptrunner import add_script_run_ctx, get_script_run_ctx

from dashboard import queries as Q
from dashboard.config import load_settings

F = TypeVar("F", bound=Callable[..., Any])

TTL_SECONDS = load_settings().dashboard_cache_seconds
_cached: list[Any] = []


def _c(fn: F) -> F:
    if TTL_SECONDS <= 0:  # caching off (the benchmark measures cache misses this way)
        return fn
    wrapped = st.cache_data(ttl=TTL_SECONDS, show_spinner=False, max_entries=512)(fn)
    _cached.append(wrapped)
    return wrapped  # type: ignore[return-value]  # streamlit types it CachedFunc; it is called like fn


_pool = ThreadPoolExecutor(max_workers=6, thread_name_prefix="dw-query")


class Fetched(dict):
    """Results of :func:`fetch` by name; reading one re-raises the error of its query."""

    def __getitem__(self, key: str) -> Any:
        fut: Future = super().__getitem__(key)
        return fut.result()


def fetch(**calls: tuple[Callable[..., Any], tuple[Any, ...]]) -> Fetched:
    """Run independent queries at once (``name=(fn, args)``); a page's wall time becomes its
    slowest query instead of their sum (the threads wait on InfluxDB, not on the GIL)."""
    ctx = get_script_run_ctx()

    def call(fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        if ctx is not None:
            add_script_run_ctx(threading.current_thread(), ctx)
        return fn(*args)

    out = Fetched()
    for name, (fn, args) in calls.items():
        dict.__setitem__(out, name, _pool.submit(call, fn, args))
    return out


def clear() -> None:
    """Forget every cached result (the "refresh now" button)."""
    for fn in _cached:
        fn.clear()


models = _c(Q.models)
data_start = _c(Q.data_start)
versions = _c(Q.versions)
segments = _c(Q.segments)
features = _c(Q.features)
overview = _c(Q.overview)
throughput = _c(Q.throughput)
active_alerts = _c(Q.active_alerts)
alert_points = _c(Q.alert_points)
deliveries = _c(Q.deliveries)
budget_spent = _c(Q.budget_spent)
drift_heatmap = _c(Q.drift_heatmap)
drift_counts = _c(Q.drift_counts)
drift_latest = _c(Q.drift_latest)
drift_feature_series = _c(Q.drift_feature_series)
drift_feature_windows = _c(Q.drift_feature_windows)
drift_summary_series = _c(Q.drift_summary_series)
drift_summary_latest = _c(Q.drift_summary_latest)
histogram = _c(Q.histogram)
quality_series = _c(Q.quality_series)
quality_latest = _c(Q.quality_latest)
deadletters = _c(Q.deadletters)
deadletter_models = _c(Q.deadletter_models)
performance_series = _c(Q.performance_series)
performance_labels = _c(Q.performance_labels)
performance_latest = _c(Q.performance_latest)
evaluator_status = _c(Q.evaluator_status)
prediction_drift = _c(Q.prediction_drift)
adversarial_series = _c(Q.adversarial_series)
adversarial_latest = _c(Q.adversarial_latest)
adversarial_flags = _c(Q.adversarial_flags)
sources = _c(Q.sources)
