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
SHARD = "dw_shard"  # one per partial window of a sharded model's shard: its count and checkpoint (no results)
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
T_SHARD = "shard"  # input partition of a sharded model's shard (dw_shard; at most the partition count)

# Fields, per measurement ------------------------------------------------------
# dw_drift
F_STATISTIC = "statistic"
F_P_VALUE = "p_value"
F_THRESHOLD = "threshold"
F_DRIFT = "drift"
F_PSI = "psi"
F_JS = "js"
F_WASSERSTEIN = "wasserstein"
F_N_REF = "n_ref"
F_N_CUR = "n_cur"
F_RANK = "rank"
F_ENGINE = "engine"
EFFECT_FIELDS = (F_PSI, F_JS, F_WASSERSTEIN)
DRIFT_TESTS = ("ks", "cvm", "chi2")  # detector tag values of dw_drift
# dw_impact (one per reference and feature; detector = mi | permutation)
F_NORMALIZED = "normalized"  # share of the sum of positive importances
F_IMPORTANCE = "importance"
# dw_drift_summary
F_SHARE_DRIFTED = "share_drifted"
F_N_DRIFTED = "n_drifted"
F_N_FEATURES = "n_features"
F_CORRECTION = "correction"
F_P_VAL = "p_val"
F_TOP_FEATURE = "top_feature"
F_N_SKIPPED = "n_skipped"  # features left untested (too few values)
F_THRESHOLD_METHOD = "threshold_method"  # the verdict rule (detectors.thresholds.METHODS)
SUMMARY_DETECTOR = "univariate"  # detector tag of the per-window univariate summary
# dw_quality
QUALITY_RATES = ("missing_rate", "out_of_range_rate", "unknown_category_rate", "type_error_rate", "null_violation_rate")
# dw_window
F_N_EVENTS = "n_events"
F_N_INVALID = "n_invalid"
F_EVENTS_PER_S = "events_per_s"
F_DURATION = "duration"
F_WINDOW_START = "window_start"
F_WINDOW_END = "window_end"
F_CONSUMER_LAG = "consumer_lag"  # optional: messages behind, if a worker reports it
F_CLOSED_AT = "closed_at"  # wall clock (epoch s) when the worker closed the window: latency measurements
F_CLOSE_REASON = "close_reason"  # count | time | idle | shutdown
F_SEQ = "seq"  # the window's sequence number in its stream
F_DRIFT_EVALUATED = "drift_evaluated"  # 1 when the detectors had a reference to judge against
F_REFERENCE = "reference"  # the reference kind the window was judged against (or "none")
F_SUMMARISED = "summarised"  # 1: the window kept a summary, not its rows (window.summary_min_events)
#: the window's checkpoint (streams.worker.windows.Checkpoint): where a restarted worker resumes
CKPT_FIELDS = {
    "topic": "ckpt_topic",
    "partition": "ckpt_partition",
    "start_offset": "ckpt_start_offset",
    "start_row": "ckpt_start_row",
    "end_offset": "ckpt_end_offset",
    "end_row": "ckpt_end_row",
    "closed_until": "ckpt_closed_until",
    "max_event_time": "ckpt_max_event_time",
    "window_start": "ckpt_window_start",
}
# dw_deadletter
F_COUNT = "count"
F_DL_MODEL = "model_id"  # dw_deadletter: the model the messages named (a field: unknown ids are not tags)
# dw_performance (tags metric, detector = realized | cbpe; metric=label_join: join counters)
F_VALUE = "value"
F_ESTIMATED = "estimated"
F_N_LABELS = "n_labels"
F_LABEL_COVERAGE = "label_coverage"
F_DELAY_P50 = "label_delay_p50"
F_DELAY_P95 = "label_delay_p95"
REALIZED, CBPE = "realized", "cbpe"
#: the band a drift verdict was judged against (detectors/thresholds.py): ``judged`` names the
#: value (p_value, statistic or effect), ``band_lower``/``band_upper`` its band (absent: unbounded)
F_JUDGED, F_BAND_LOWER, F_BAND_UPPER, F_EFFECT = "judged", "band_lower", "band_upper", "effect"
F_LOWER, F_UPPER = "lower", "upper"  # CBPE accuracy: the estimate's sampling band (± 3 std)
F_ESTIMATION_ERROR = "estimation_error"  # realized accuracy: |CBPE's estimate of the same rows - realized|
F_CBPE_VALUE = "cbpe_value"
# dw_status (tag detector = evaluator; fields computed 0/1, reason)
F_COMPUTED, F_REASON = "computed", "reason"
LABEL_JOIN = "label_join"
F_MATCHED, F_PREDICTIONS, F_PENDING, F_EXPIRED = "matched", "predictions", "pending_predictions", "expired"
# dw_prediction (tags feature = output, detector = test | summary | share)
F_N_WINDOW = "n_window"
PRED_ALL = "__all__"
# dw_adversarial / dw_source
F_SCORE = "score"
F_FLAGGED = "flagged"  # dw_adversarial
F_EXTRACTION_FLAG = "extraction_flag"  # dw_source
F_SOURCE_FLAG = "flag"  # dw_source: flagged by any component (extraction or a source contrast)
F_FLAGGED_BY = "flagged_by"  # dw_adversarial, dw_source: the components that raised the flag
# dw_alert (one point per alert and window while pending/firing, and on every change;
# tags: model, version, rule, severity + the series' own tags such as feature)
F_STATE = "status"  # inactive | pending | firing | resolved
F_FIRING = "firing"  # 1 while firing
F_MESSAGE = "summary"
F_SILENCED = "silenced"
F_RULE = T_RULE  # dw_alert: the rule's name is a tag
STATE_FIRING = "firing"
STATE_RESOLVED = "resolved"
STATE_PENDING = "pending"
# dw_delivery (tags: endpoint, model, version, rule)
F_DELIVERY_STATUS = "status"  # pending | retrying | delivered | failed
F_HTTP_STATUS = "http_status"
F_ATTEMPTS = "attempts"
F_LAST_ERROR = "last_error"
F_EVENT = "event"  # firing | resolved
DELIVERED = "delivered"

TIME = "time"

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

    def __reduce__(self) -> tuple[type[Record], tuple[str, dict, dict, int, dict]]:
        """Pickled as its constructor's arguments: ~80 records per window come back from the detector
        process, and the frozen dataclass's default state protocol took twice as long each way."""
        return (Record, (self.measurement, self.tags, self.fields, self.time_ns, self.extra))
