"""The vocabulary of results: measurement, tag and field names.

Every result a detector produces becomes a :class:`Record`. The InfluxDB sink
writes records and the dashboard queries them, both importing the names from
here so the two cannot drift apart.

Tag values are bounded: model, version, feature, detector, metric, severity,
segment, source (top-K only). Never raw values or event ids.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Measurements ---------------------------------------------------------------
WINDOW = "dw_window"  # one per window and model/version: counts, rates, timing
DRIFT = "dw_drift"  # one per window and feature (and detector)
DRIFT_SUMMARY = "dw_drift_summary"  # one per window: share drifting, correction
QUALITY = "dw_quality"  # one per window and feature: missing/out-of-range/... rates
HISTOGRAM = "dw_histogram"  # one per window and feature: bin counts
REFERENCE_HISTOGRAM = "dw_reference_histogram"  # bins of the reference
PREDICTION = "dw_prediction"  # prediction drift
PERFORMANCE = "dw_performance"  # realized / estimated performance
ADVERSARIAL = "dw_adversarial"  # combined score and components
SOURCE = "dw_source"  # per-source (top-K) attack flags
DEADLETTER = "dw_deadletter"  # dead-lettered messages by reason
ALERT = "dw_alert"  # alert state changes
DELIVERY = "dw_delivery"  # webhook delivery log
IMPACT = "dw_impact"  # one per reference and feature: impact on the model output
STATUS = "dw_status"  # one per window and row-based evaluator: computed or not, and why not

# Tags -------------------------------------------------------------------------
T_MODEL = "model"
T_VERSION = "version"
T_FEATURE = "feature"
T_DETECTOR = "detector"
T_METRIC = "metric"
T_SEVERITY = "severity"
T_SEGMENT = "segment"
T_SOURCE = "source"
T_REASON = "reason"
T_RULE = "rule"  # alert rule name (dw_alert, dw_delivery)
T_ENDPOINT = "endpoint"  # webhook endpoint name (dw_delivery)

FieldValue = float | int | str | bool


@dataclass(frozen=True, slots=True)
class Record:
    """One result point: a measurement, bounded tags, numeric/string fields.

    ``time_ns`` is the window end, so rewriting a window overwrites its points.

    >>> Record(DRIFT, {"model": "m", "feature": "x"}, {"p_value": 0.5}, 1).measurement
    'dw_drift'
    """

    measurement: str
    tags: dict[str, str]
    fields: dict[str, FieldValue]
    time_ns: int = 0
    extra: dict[str, object] = field(default_factory=dict, compare=False)
