"""Per-model monitor configuration: one YAML file, validated by pydantic.

A bad file raises :class:`ConfigError` whose message names the file, the
field path (``models[0].features[2].min``) and the problem.

Example (the demo's file is ``streams/devstack/examples/demo.yaml``)::

    models:
      - model_id: iris
        task: classification
        features:
          - {name: sepal_length, kind: numeric, min: 0, max: 10}
          - {name: color, kind: categorical, allowed: [red, green]}
        window: {size_events: 1000}
        reference: {first_n: 2000}
        drift: {p_val: 0.05, correction: bonferroni}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from detectors import budget as B
from detectors.adversarial.spec import AdversarialSpec
from detectors.errors import ConfigurationError
from detectors.outputs import OutputColumns
from detectors.spec import DriftSpec, ErrorStreamSpec, FeatureSpec
from streams.alerts.rules import AlertRule, RuleError, SilenceConfig, WebhookConfig, check_routes


class ConfigError(ConfigurationError):
    """A config or reference file is unusable; the message says where and why."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WindowConfig(_Strict):
    """Tumbling windows: by event count, or by event time with a lateness grace."""

    size_events: int | None = Field(None, ge=10, le=10_000_000)
    size_seconds: float | None = Field(None, gt=0)
    grace_seconds: float = Field(0.0, ge=0, description="event-time windows: wait for late events")
    idle_close_seconds: float = Field(30.0, gt=0, description="close the open window(s) after this long without events")
    max_open_windows: int = Field(
        16, ge=1, le=1000, description="event-time windows: most open at once (caps the grace; bounds memory)"
    )
    summary_min_events: int | None = Field(
        100_000,
        ge=10,
        description="count windows of at least this many events keep a mergeable summary "
        "instead of their rows (detectors/summaries.py); an event-time window keeps rows until it holds this "
        "many, then turns into a summary (bounded memory); null: always rows",
    )
    summary_min_seconds: float | None = Field(
        None,
        gt=0,
        description="event-time windows of at least this many seconds keep a mergeable summary per open window "
        "from the moment it opens instead of their rows, checkpointed to Kafka while open (docs/worker.md); "
        "null: rows until summary_min_events",
    )
    reference_points_every: int = Field(
        100,  # streams.worker.pipeline.REFERENCE_POINTS_EVERY
        ge=1,
        description="the reference's own points (histograms, feature impacts) are written by the window that "
        "starts using a reference and by every this-many-th window (1: every window)",
    )
    summary_bins: int = Field(
        1024, ge=16, le=65_536, description="summaries: fine reference-quantile bins per numeric feature"
    )
    summary_reservoir: int = Field(
        2000, ge=0, le=100_000, description="summaries: rows sampled per window for the row-based detectors"
    )

    @model_validator(mode="after")
    def _one_kind(self) -> WindowConfig:
        if (self.size_events is None) == (self.size_seconds is None):
            raise ValueError("set exactly one of size_events or size_seconds")
        return self


class ReferenceConfig(_Strict):
    """Where the reference distribution comes from (exactly one source)."""

    file: Path | None = Field(
        None, description="reference rows: .csv, .csv.gz, .jsonl(.gz), .parquet or .npz (docs/references.md)"
    )
    first_n: int | None = Field(None, ge=10, description="the first N events of each model version")
    rolling: bool = Field(False, description="the previous window")
    rolling_history: int = Field(
        100,
        ge=0,
        le=1000,
        description="rolling: past windows whose change from the window before them calibrates the "
        "chunk band (docs/detection-science.md; 0 = none: p-value and effect floor)",
    )
    # columns of the file that hold the model's outputs and the true labels (docs/references.md)
    prediction: str | None = Field(
        None, min_length=1, description="file: column of the served class (regression: the predicted value)"
    )
    probabilities: dict[str, str] = Field(
        default_factory=dict, description="file: class -> column of its predicted probability"
    )
    score: str | None = Field(None, min_length=1, description="file: column of the model's score")
    label: str | None = Field(
        None, min_length=1, description="file: column of the true label (calibrates CBPE; impact against labels)"
    )

    @model_validator(mode="after")
    def _one_source(self) -> ReferenceConfig:
        n = sum([self.file is not None, self.first_n is not None, self.rolling])
        if n != 1:
            raise ValueError("set exactly one of file, first_n or rolling")
        cols = self.outputs().columns
        if cols and self.file is None:
            raise ValueError(
                "prediction/probabilities/score/label name columns of a reference file: set file "
                "(first_n and rolling references take the outputs from the events, and the labels "
                "from the label join)"
            )
        if len(cols) != len([c for c in (self.prediction, *self.probabilities.values(), self.score, self.label) if c]):
            raise ValueError("prediction, probabilities, score and label must name different columns")
        return self

    def outputs(self) -> OutputColumns:
        """The declared output and label columns of the file."""
        return OutputColumns(self.prediction, dict(self.probabilities), self.score, self.label)


class PerformanceConfig(_Strict):
    """Estimated performance (CBPE): calibrated on labelled reference rows before it shows a number."""

    calibration_rows: int | None = Field(
        None,
        ge=20,
        description="without a labelled reference file: "
        "calibrate on the model's first N joined labels "
        "(default: first_n, at least 1000)",
    )
    min_calibration_rows: int = Field(
        200, ge=20, description="fewest labelled rows to calibrate on; until then the estimate says 'not calibrated'"
    )
    calibration: Literal["first", "rolling"] = Field(
        "first",
        description="without a labelled reference file: 'first' calibrates on the first calibration_rows joined "
        "labels and recalibrates when they stop holding (tested on every later label); 'rolling' on the most "
        "recent calibration_rows joined labels, refitted as they come (docs/detection-science.md)",
    )

    @model_validator(mode="after")
    def _order(self) -> PerformanceConfig:
        if self.calibration_rows is not None and self.min_calibration_rows > self.calibration_rows:
            raise ValueError("min_calibration_rows must not exceed calibration_rows")
        return self

    def rows(self, reference: ReferenceConfig) -> int:
        """How many joined labels calibrate CBPE: as configured, else as many as a ``first_n``
        reference has events (the labels of the reference, as NannyML calibrates), at least 1000."""
        if self.calibration_rows is not None:
            return self.calibration_rows
        return max(1000, reference.first_n or 0, self.min_calibration_rows)


class ImpactConfig(_Strict):
    """Feature importance: measured on the reference rows, or declared."""

    method: Literal["mi", "permutation"] = Field(
        "mi", description="mutual information, or permutation importance of a surrogate model"
    )
    target: Literal["prediction", "label"] = Field(
        "prediction", description="explain the served output, or the true label (needs reference labels)"
    )
    declared: dict[str, float] = Field(
        default_factory=dict, description="feature -> importance (>= 0): used instead of measuring"
    )


class LabelsConfig(_Strict):
    """Delayed-label join: bounded memory, expiring; concept drift on the error stream (``online``)."""

    ttl_seconds: float = Field(86_400.0, gt=0)
    max_pending: int = Field(1_000_000, ge=1)
    online: ErrorStreamSpec = Field(
        ErrorStreamSpec(), description="FETOnline on the 0/1 error stream (docs/detection-science.md)"
    )


SEGMENT_TOP_K = 10
"""Values kept per segment feature (``Reference.from_frame``'s default): at most this + 1 segments."""


class AlarmBudgetConfig(_Strict):
    """False alarms the deployment accepts across all models × features × segments (``alarm_budget``).

    driftwatch derives every model's drift level from it (:mod:`detectors.budget`);
    it replaces ``drift.p_val``. ``event_rates``: events per second of models whose
    windows count events (``size_events``); without one the worker uses the rate
    it observes.
    """

    false_alarms: float = Field(gt=0, description="false alarms accepted per period")
    per: Literal["day", "week"] = "day"
    event_rates: dict[str, float] = Field(
        default_factory=dict, description="model_id -> events/s (size_events windows)"
    )

    @property
    def per_day(self) -> float:
        return B.per_day(self.false_alarms, self.per)


class ModelMonitor(_Strict):
    """Everything monitored for one model id (all its versions)."""

    model_id: str = Field(min_length=1)
    task: Literal["classification", "regression"] = "classification"
    features: list[FeatureSpec] = Field(min_length=1)
    window: WindowConfig = WindowConfig(size_events=1000)
    reference: ReferenceConfig = ReferenceConfig(first_n=1000)
    drift: DriftSpec = DriftSpec()
    segments: list[str] = Field(default_factory=list, description="categorical features to segment by")
    labels: LabelsConfig = LabelsConfig()
    alerts: list[AlertRule] = Field(default_factory=list, description="alert rules (docs/alerts.md)")
    adversarial: AdversarialSpec = Field(AdversarialSpec(), description="adversarial scores (docs/adversarial.md)")
    performance: PerformanceConfig = Field(
        PerformanceConfig(), description="CBPE calibration (docs/detection-science.md)"
    )
    impact: ImpactConfig = Field(ImpactConfig(), description="feature importance (docs/detectors.md)")
    shards: int = Field(
        1,
        ge=1,
        le=1024,
        description="spread one hot model over this many partitions (the SDK's shards=): each shard's worker "
        "closes partial window summaries of size_events/shards events, one merge step per model combines them "
        "(docs/scale-out.md#one-hot-model-across-workers)",
    )
    _budget: tuple[float, int, float | None] | None = PrivateAttr(default=None)  # (alarms/day, Σ families,
    # declared events/s) under an alarm budget

    @property
    def family_counts(self) -> dict[str, int]:
        """Alarming verdict families per window, by kind: univariate drift and data quality for the whole
        window and, at most, each segment; prediction drift; multivariate drift when on; CBPE's estimate
        against its reference-chunk band (classification). Each gets the budget's level per window."""
        per = 1 + len(self.segments) * (SEGMENT_TOP_K + 1)
        out = {"drift": per, "quality": per, "prediction": 1}
        if self.drift.multivariate != "none":
            out["multivariate"] = 1
        if self.task == "classification":
            out["performance"] = 1
        return out

    @property
    def families(self) -> int:
        """All alarming verdict families per window (:attr:`family_counts`)."""
        return sum(self.family_counts.values())

    def load(self, events_per_second: float | None = None, source: str = "declared") -> B.ModelLoad:
        """This model's demand on the false-alarm budget (windows/day from the window or the rate; the
        online detectors' expected false alarms from the event rate)."""
        w = self.window
        wpd = B.windows_per_day(w.size_seconds, w.size_events, events_per_second)
        src = "size_seconds" if w.size_seconds is not None else (source if wpd is not None else "unknown")
        kinds = ", ".join(f"{k} {v}" for k, v in self.family_counts.items())
        fixed = B.online_per_day(len(self.drift.online.features), self.drift.online.ert, events_per_second)
        return B.ModelLoad(self.model_id, wpd, self.families, len(self.features), src, kinds, fixed)

    @property
    def observes_rate(self) -> bool:
        """The budget's level follows the observed event rate (size_events windows, no declared rate)."""
        return self._budget is not None and self.window.size_events is not None and self._budget[2] is None

    def drift_for_rate(self, events_per_second: float | None) -> DriftSpec:
        """The drift spec in force: ``drift``, with the budget's level at this event rate when budgeted
        (a declared rate, ``alarm_budget.event_rates``, wins over ``events_per_second``)."""
        if self._budget is None:
            return self.drift
        per_day, total, declared = self._budget
        events_per_second = declared if declared is not None else events_per_second
        level = B.window_level(per_day, total, self.load(events_per_second).windows_per_day)
        return self.drift if level is None else self.drift.model_copy(update={"p_val": level})

    @model_validator(mode="after")
    def _check(self) -> ModelMonitor:
        names = [f.name for f in self.features]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"duplicate feature names: {sorted(dup)}")
        kinds = {f.name: f.kind for f in self.features}
        for s in self.segments:
            if kinds.get(s) != "categorical":
                raise ValueError(f"segment {s!r} must name a categorical feature")
            if any(f.sensitive for f in self.features if f.name == s):  # its values would become tag values
                raise ValueError(f"segment {s!r} is a sensitive feature: segments publish its values")
        unknown = sorted(set(self.impact.declared) - set(names))
        if unknown:
            raise ValueError(f"impact.declared: {unknown} are not features of the model (features: {names})")
        if any(not v >= 0 for v in self.impact.declared.values()):
            raise ValueError("impact.declared: importances must be >= 0")
        if (
            self.impact.target == "label"
            and not self.impact.declared
            and self.reference.file is not None
            and self.reference.label is None
        ):
            raise ValueError("impact.target: label needs reference.label (the column of the true label)")
        if self.task == "regression" and self.reference.probabilities:
            raise ValueError("reference.probabilities: a regression model has no class probabilities")
        numeric = [f.name for f in self.features if f.kind == "numeric"]
        for name in self.drift.online.features:
            if name not in numeric:
                what = "a categorical feature" if kinds.get(name) == "categorical" else "not a feature of the model"
                raise ValueError(
                    f"drift.online.features: {name!r} is {what}; online drift watches numeric "
                    f"features (numeric: {numeric})"
                )
        if self.shards > 1:
            self._check_sharded()
        return self

    def _check_sharded(self) -> None:
        """What a sharded model needs: windows that line up across shards, one reference for all of them."""
        n, w = self.shards, self.window
        if w.size_events is None:
            raise ValueError(
                f"shards: {n} needs count windows (window.size_events); event-time windows are not sharded"
            )
        if w.size_events % n:
            raise ValueError(f"window.size_events: {w.size_events} is not a multiple of shards ({n})")
        if self.reference.file is None:
            raise ValueError(
                f"shards: {n} needs reference.file: every shard and the merge step must use the same reference "
                "(a first_n or rolling reference would differ per shard)"
            )


class MonitorsConfig(_Strict):
    """The whole file: the monitored models (and, later, shared webhook endpoints)."""

    models: list[ModelMonitor] = Field(min_length=1)
    webhooks: list[WebhookConfig] = Field(default_factory=list, description="alert endpoints (docs/alerts.md)")
    silences: list[SilenceConfig] = Field(default_factory=list, description="alert silences, each with an expiry")
    dashboard_url: str | None = Field(None, description="dashboard base URL put in alerts (default: local port)")
    alarm_budget: AlarmBudgetConfig | None = Field(
        None, description="false alarms per day/week across all models (docs/detection-science.md)"
    )

    @model_validator(mode="after")
    def _unique(self) -> MonitorsConfig:
        ids = [m.model_id for m in self.models]
        dup = {i for i in ids if ids.count(i) > 1}
        if dup:
            raise ValueError(f"duplicate model_id: {sorted(dup)}")
        if self.alarm_budget is not None:
            for mid, rate in self.alarm_budget.event_rates.items():
                if mid not in ids:
                    raise ValueError(f"alarm_budget.event_rates: {mid!r} is not a configured model_id")
                if not rate > 0:
                    raise ValueError(f"alarm_budget.event_rates.{mid}: must be > 0 events/s, got {rate}")
            total = sum(m.families for m in self.models)
            # the online detectors' expected false alarms (declared rates: known now) come off the budget first
            rates = self.alarm_budget.event_rates
            left = B.remaining(
                self.alarm_budget.per_day, [m.load(rates.get(m.model_id)).fixed_per_day for m in self.models]
            )
            for m in self.models:  # the level in force; size_events without a rate: set per window (observed)
                m._budget = (left, total, rates.get(m.model_id))
                m.drift = m.drift_for_rate(None)
        try:
            check_routes({m.model_id: m.alerts for m in self.models}, self.webhooks)
        except RuleError as e:
            raise ValueError(str(e)) from None
        return self

    def budget_plan(self, observed_rates: dict[str, float] | None = None) -> list[B.BudgetLine] | None:
        """The budget's allocation per model (None without ``alarm_budget``).

        Event rates: declared (``alarm_budget.event_rates``) first, then ``observed_rates``.
        """
        if self.alarm_budget is None:
            return None
        observed = observed_rates or {}
        loads = []
        for m in self.models:
            declared = self.alarm_budget.event_rates.get(m.model_id)
            rate, src = (declared, "declared") if declared is not None else (observed.get(m.model_id), "observed")
            loads.append(m.load(rate, src))
        return B.allocate(self.alarm_budget.per_day, loads)

    @property
    def sharded(self) -> bool:
        """True when some model is spread over partitions (``shards`` > 1): the worker then needs the partials
        topic (:mod:`streams.worker.shards`)."""
        return any(m.shards > 1 for m in self.models)

    def model(self, model_id: str) -> ModelMonitor | None:
        """The monitor of ``model_id``, or None when the model is not configured."""
        return next((m for m in self.models if m.model_id == model_id), None)


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def parse_monitors(data: Any, source: str = "<config>") -> MonitorsConfig:
    """Validate already-parsed YAML/JSON data."""
    try:
        return MonitorsConfig.model_validate(data)
    except ValidationError as e:
        lines = [f"{source}: {_loc(err['loc'])}: {err['msg']}" for err in e.errors()]
        raise ConfigError("invalid monitor config\n  " + "\n  ".join(lines)) from None


def load_monitors(path: Path | str) -> MonitorsConfig:
    """Read and validate a monitor config file (relative reference paths resolve next to it)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read monitor config: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    except RecursionError:
        raise ConfigError(f"{path}: not a monitor config: nested too deeply") from None
    cfg = parse_monitors(data, str(path))
    for m in cfg.models:
        if m.reference.file is not None and not m.reference.file.is_absolute():
            m.reference.file = (path.parent / m.reference.file).resolve()
        sq = m.adversarial.squeeze
        if sq.model is not None and not sq.model.is_absolute():  # the estimator file, next to the config
            m.adversarial = m.adversarial.model_copy(
                update={"squeeze": sq.model_copy(update={"model": (path.parent / sq.model).resolve()})}
            )
    return cfg


def file_reference(model: ModelMonitor):
    """The :class:`~detectors.reference.Reference` a worker builds from ``model.reference.file``, its rows
    attached (the row-based evaluators need them).

    One function for the worker and ``check-config``, so the check rejects exactly what the worker would.
    Raises :class:`~detectors.reference.ReferenceDataError` (or ``ValueError``) saying why the file is unusable.
    """
    from detectors.outputs import read_reference_rows
    from detectors.reference import Reference, attach_reference_frame

    if model.reference.file is None:
        raise ValueError(f"{model.model_id}: the reference is not a file")
    # with the model's outputs and the true labels, where the config declares their columns
    rows = read_reference_rows(model.reference.file, model.features, model.reference.outputs(), model.task)
    ref = Reference.from_frame(
        rows, model.features, bins=model.drift.histogram_bins, segments=model.segments, source=str(model.reference.file)
    )
    return attach_reference_frame(ref, rows)
