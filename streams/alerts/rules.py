"""Alert rules: their config models and their pure evaluation over a window's Records.

A rule is declared per model in the monitor config and watches one stored signal,
``<measurement>.<field>``, for example ``drift.p_value`` (a feature's KS/chi² p-value)
or ``drift_summary.share_drifted``. ``where`` filters the series by tag; ``"*"`` (or a
glob such as ``"petal_*"``) matches any value and gives one alert per matching series
(one per feature, say). Every window the rule compares each matching series' value with
its threshold; :mod:`streams.alerts.lifecycle` turns those verdicts into
pending → firing → resolved.

.. code-block:: yaml

    alerts:
      - name: feature_drift
        signal: drift.p_value
        where: {feature: "*"}
        op: "<"
        threshold: 0.01
        for_windows: 3              # three breaching windows in a row ...
        for: 10m                    # ... spanning at least 10 minutes (window end times) before firing
        keep_firing_for: 30m        # a firing alert resolves after 30 minutes without a breach
        severity: warning
        labels: {team: risk}
        summary: "{feature} drifted on {model} v{version}: p={value:.3g} < {threshold}"

This module is pure: config models, no I/O.

>>> rule = AlertRule(name="drift", signal="drift.p_value", where={"feature": "*"},
...                  op="<", threshold=0.01)
>>> recs = [Record(DRIFT, {"model": "m", "version": "1", "feature": "x"}, {"p_value": 0.001}, 5)]
>>> [(o.key, o.breached) for o in evaluate([rule], recs, "m", "1")]
[('m/1/drift{feature=x}', True)]
"""

from __future__ import annotations

import fnmatch
import hashlib
import math
import os
import re
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from detectors.errors import ConfigurationError
from detectors.records import (
    ADVERSARIAL,
    DEADLETTER,
    DRIFT,
    DRIFT_SUMMARY,
    PERFORMANCE,
    PREDICTION,
    QUALITY,
    SOURCE,
    T_MODEL,
    T_SEGMENT,
    T_VERSION,
    WINDOW,
    FieldValue,
    Record,
)

__all__ = [
    "KNOWN_FIELDS",
    "SEVERITIES",
    "SIGNALS",
    "AlertRule",
    "Observation",
    "RuleError",
    "SilenceConfig",
    "WebhookConfig",
    "alert_key",
    "check_routes",
    "compare",
    "evaluate",
    "parse_duration",
    "render_summary",
    "seconds_text",
]


class RuleError(ConfigurationError):
    """A rule, webhook or silence is unusable; the message says which and why."""


# Signals ------------------------------------------------------------------------
#: short name used in rules -> InfluxDB measurement (the full name works too)
SIGNALS: dict[str, str] = {
    "drift": DRIFT,
    "drift_summary": DRIFT_SUMMARY,
    "quality": QUALITY,
    "performance": PERFORMANCE,
    "adversarial": ADVERSARIAL,
    "source": SOURCE,
    "prediction": PREDICTION,
    "window": WINDOW,
    "deadletter": DEADLETTER,
}

#: fields documented per signal (docs/alerts.md); other field names are accepted so a new
#: detector output can be alerted on without a code change, but these are the usual ones.
KNOWN_FIELDS: dict[str, tuple[str, ...]] = {
    "drift": ("p_value", "statistic", "psi", "js", "wasserstein", "drift"),
    "drift_summary": ("share_drifted",),
    "quality": ("missing_rate", "out_of_range_rate", "unknown_category_rate", "type_error_rate", "quality_alarm"),
    "performance": ("value",),
    "adversarial": ("score",),
    "source": ("flag", "extraction_flag"),
}

#: the segment tag value of unsegmented results (detectors/runner.py)
ALL_SEGMENTS = "all"

SEVERITIES: tuple[str, ...] = ("info", "warning", "critical")
Severity = Literal["info", "warning", "critical"]
Comparison = Literal[">", ">=", "<", "<=", "==", "!="]

_NAME = r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}$"
_LABEL = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_ENV = r"^[A-Za-z_][A-Za-z0-9_]*$"
#: labels the engine sets itself; a rule's ``labels`` may not override them
RESERVED_LABELS = frozenset({"alertname", "model", "version", "severity"})

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: Any) -> Any:
    """Seconds from a number or a string such as ``"90s"``, ``"15m"``, ``"4h"``, ``"7d"``.

    >>> parse_duration("15m"), parse_duration(30), parse_duration("1.5h")
    (900.0, 30, 5400.0)
    """
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", value)
        if not m:
            raise ValueError(f"not a duration: {value!r} (use e.g. 30, '90s', '15m', '4h', '7d')")
        return float(m.group(1)) * _UNITS[m.group(2) or "s"]
    return value


def seconds_text(seconds: float) -> str:
    """A duration as people write it in rules.

    >>> seconds_text(90), seconds_text(600), seconds_text(7200), seconds_text(2.5)
    ('90s', '10m', '2h', '2.5s')
    """
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


Duration = Annotated[float, BeforeValidator(parse_duration)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# Template rendering ---------------------------------------------------------------
class _SafeFormatter(string.Formatter):
    """``str.format`` without attribute/index access; unknown names render as ``?``."""

    def get_field(self, field_name: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", field_name):
            raise ValueError(f"template field {{{field_name}}}: only plain names are allowed")
        return kwargs.get(field_name, "?"), field_name

    def format_field(self, value: Any, format_spec: str) -> str:
        try:
            return super().format_field(value, format_spec)
        except (ValueError, TypeError):  # e.g. {value:.3g} for a string value
            return str(value)


_FORMATTER = _SafeFormatter()


def render_summary(template: str, values: Mapping[str, Any]) -> str:
    """Fill a summary template; unknown names become ``?``, never an exception.

    >>> render_summary("{feature}: p={value:.2f} ({nope})", {"feature": "age", "value": 0.0123})
    'age: p=0.01 (?)'
    """
    return _FORMATTER.vformat(template, (), values)


# Config models -----------------------------------------------------------------
class AlertRule(_Strict):
    """One alert rule of a model (see the module docstring and docs/alerts.md).

    Hysteresis, with Prometheus' names: ``for`` (and ``for_windows``) is how long the
    condition must hold before the alert fires (meanwhile it is *pending*);
    ``keep_firing_for`` is how long a firing alert stays firing after its condition was
    last true, so a condition that flickers (an online detector's 0/1 verdict, a p-value
    hovering at the threshold) gives one firing and one resolve instead of a pair per
    flicker. Both are measured on the windows' end times (the data's event time, as the
    rest of the lifecycle), not the worker's clock, so a replayed stream alerts the same.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: str = Field(pattern=_NAME, description="unique per model; the alert's `alertname`")
    signal: str = Field(description="`<signal>.<field>`, e.g. drift.p_value, quality.missing_rate")
    where: dict[str, str | list[str]] = Field(
        default_factory=dict, description="tag filters; '*' or a glob matches any value (one alert per series)"
    )
    op: Comparison = Field(description="the condition that means 'wrong': value <op> threshold")
    threshold: float | bool | str
    for_windows: int = Field(1, ge=1, le=10_000, description="consecutive breaching windows before firing")
    for_: Duration = Field(
        0.0,
        alias="for",
        ge=0,
        le=30 * 86_400,
        description="the condition must hold this long (seconds or '10m', between the end of the first and of the "
        "current breaching window) before firing; 0 = at once (besides for_windows)",
    )
    keep_firing_for: Duration = Field(
        0.0,
        ge=0,
        le=30 * 86_400,
        description="a firing alert resolves only once its condition has been false this long (seconds or '30m', "
        "since the end of the last breaching window); 0 = at the first window without a breach",
    )
    severity: Severity = "warning"
    labels: dict[str, str] = Field(default_factory=dict)
    summary: str | None = Field(None, max_length=500, description="template, e.g. '{feature} drifted: p={value:.3g}'")
    repeat_interval: Duration | None = Field(
        14_400.0, description="re-notify a still-firing alert after this long (seconds or '4h'); null = never"
    )
    webhooks: list[str] | None = Field(None, description="endpoint names; null = every endpoint")
    max_series: int = Field(100, ge=1, le=10_000, description="bound on alert keys per window")

    @field_validator("signal")
    @classmethod
    def _signal(cls, v: str) -> str:
        name, _, fld = v.partition(".")
        if name not in SIGNALS and name not in SIGNALS.values():
            raise ValueError(f"unknown signal {name!r}; use one of {sorted(SIGNALS)}")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", fld):
            known = KNOWN_FIELDS.get(name)
            hint = f" (e.g. {', '.join(f'{name}.{f}' for f in known)})" if known else ""
            raise ValueError(f"signal must be '<signal>.<field>'{hint}, got {v!r}")
        return v

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: dict[str, str]) -> dict[str, str]:
        for k in v:
            if not _LABEL.match(k):
                raise ValueError(f"label name {k!r} must match [A-Za-z_][A-Za-z0-9_]*")
            if k in RESERVED_LABELS:
                raise ValueError(f"label {k!r} is set by driftwatch; choose another name")
        return v

    @field_validator("summary")
    @classmethod
    def _template(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                render_summary(v, {})
            except ValueError as e:
                raise ValueError(f"summary template: {e}") from None
        return v

    @field_validator("repeat_interval")
    @classmethod
    def _repeat(cls, v: float | None) -> float | None:
        if v is not None and v < 0:
            raise ValueError("repeat_interval must be >= 0 (0 or null: never repeat)")
        return v or None

    @model_validator(mode="after")
    def _check(self) -> AlertRule:
        if isinstance(self.threshold, str) and self.op not in ("==", "!="):
            raise ValueError(f"a text threshold only works with == or != (got {self.op!r})")
        for tag in self.where:
            if tag in (T_MODEL, T_VERSION):
                raise ValueError(f"where: {tag!r} is implied by the model the rule belongs to")
        return self

    def condition_text(self) -> str:
        """The rule's condition and hysteresis in a few words (the dashboard's rule list).

        >>> AlertRule(name="r", signal="drift.drift", op="==", threshold=1, for_windows=3,
        ...           keep_firing_for="2m").condition_text()
        'drift.drift == 1 for 3 windows, keeps firing 2m after the last breach'
        """
        wait = [f"{self.for_windows} windows"] if self.for_windows > 1 else []
        wait += [seconds_text(self.for_)] if self.for_ else []
        keep, t = self.keep_firing_for, self.threshold
        threshold = f"{t:g}" if isinstance(t, float) else str(t)
        return (
            f"{self.signal} {self.op} {threshold}"
            + (f" for {' and '.join(wait)}" if wait else "")
            + (f", keeps firing {seconds_text(keep)} after the last breach" if keep else "")
        )

    @property
    def measurement(self) -> str:
        """The InfluxDB measurement the signal reads."""
        name = self.signal.partition(".")[0]
        return SIGNALS.get(name, name)

    @property
    def field(self) -> str:
        """The field of the measurement the signal reads."""
        return self.signal.partition(".")[2]


class WebhookConfig(_Strict):
    """One webhook endpoint (top level of the monitor config, shared by all models).

    The URL and the signing secret never sit in the file itself when they are secret:
    ``url_env`` / ``secret_env`` name environment variables, ``secret_file`` a file.
    """

    name: str = Field(pattern=_NAME)
    format: Literal["json", "slack", "alertmanager"] = "json"
    url: str | None = Field(None, description="http(s) URL (use url_env when the URL holds a token, e.g. Slack)")
    url_env: str | None = Field(None, pattern=_ENV)
    secret_env: str | None = Field(None, pattern=_ENV, description="env var holding the HMAC secret")
    secret_file: Path | None = Field(None, description="file holding the HMAC secret")
    timeout_seconds: float = Field(5.0, gt=0, le=300)
    backoff_initial_seconds: float = Field(1.0, gt=0, le=3600)
    backoff_max_seconds: float = Field(60.0, gt=0, le=86_400)
    give_up_after: Duration = Field(86_400.0, gt=0, description="stop retrying a delivery after this long")
    min_severity: Severity = "info"
    send_resolved: bool = True

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^https?://[^\s/]+", v):
            raise ValueError("url must start with http:// or https://")
        return v

    @model_validator(mode="after")
    def _sources(self) -> WebhookConfig:
        if (self.url is None) == (self.url_env is None):
            raise ValueError("set exactly one of url or url_env")
        if (self.secret_env is None) == (self.secret_file is None):
            raise ValueError("set exactly one of secret_env or secret_file (every delivery is signed)")
        if self.backoff_max_seconds < self.backoff_initial_seconds:
            raise ValueError("backoff_max_seconds must be >= backoff_initial_seconds")
        return self

    def resolve_url(self) -> str:
        """The endpoint URL (from ``url`` or the ``url_env`` variable); never logged."""
        if self.url is not None:
            return self.url
        value = os.environ.get(self.url_env or "", "").strip()
        if not value:
            raise RuleError(f"webhook {self.name!r}: environment variable {self.url_env} is not set")
        if not re.match(r"^https?://", value):
            raise RuleError(f"webhook {self.name!r}: {self.url_env} does not hold an http(s) URL")
        return value

    def resolve_secret(self) -> bytes:
        """The HMAC secret (from ``secret_env`` or ``secret_file``); the message never holds it."""
        if self.secret_env is not None:
            value = os.environ.get(self.secret_env, "").strip()
            if not value:
                raise RuleError(f"webhook {self.name!r}: environment variable {self.secret_env} is not set")
            return value.encode()
        if self.secret_file is None:  # the validator asks for one of the two
            raise RuleError(f"webhook {self.name!r}: set secret_env or secret_file")
        try:
            value = Path(self.secret_file).read_text().strip()
        except OSError as e:
            raise RuleError(
                f"webhook {self.name!r}: cannot read secret_file {self.secret_file}: {e.strerror}"
            ) from None
        if not value:
            raise RuleError(f"webhook {self.name!r}: secret_file {self.secret_file} is empty")
        return value.encode()


class SilenceConfig(_Strict):
    """A silence declared in the config: matching alerts change state but notify nobody.

    ``match`` maps label names to values or globs (``feature: "petal_*"``); ``until`` is
    required — a silence always expires.
    """

    match: dict[str, str] = Field(min_length=1)
    until: datetime
    starts: datetime | None = None
    comment: str = ""

    @field_validator("until", "starts")
    @classmethod
    def _aware(cls, v: datetime | None) -> datetime | None:
        if v is not None and v.tzinfo is None:
            v = v.replace(tzinfo=UTC)
        return v


def check_routes(rules_by_model: Mapping[str, Iterable[AlertRule]], webhooks: Iterable[WebhookConfig]) -> None:
    """Cross-checks the monitor config runs: unique names, rules route to known webhooks.

    >>> check_routes({"m": [AlertRule(name="r", signal="drift.p_value", op="<", threshold=0.1,
    ...                                webhooks=["ops"])]}, [])
    Traceback (most recent call last):
    ...
    streams.alerts.rules.RuleError: model 'm', rule 'r': unknown webhook 'ops' (configured: none)
    """
    names = [w.name for w in webhooks]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise RuleError(f"duplicate webhook names: {sorted(dup)}")
    for model, rules in rules_by_model.items():
        seen: set[str] = set()
        for r in rules:
            if r.name in seen:
                raise RuleError(f"model {model!r}: duplicate alert rule name {r.name!r}")
            seen.add(r.name)
            for w in r.webhooks or ():
                if w not in names:
                    have = ", ".join(names) or "none"
                    raise RuleError(f"model {model!r}, rule {r.name!r}: unknown webhook {w!r} (configured: {have})")


# Evaluation ----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Observation:
    """One rule on one series in one window: its value and whether it breaches."""

    key: str
    rule: AlertRule
    model: str
    version: str
    series: dict[str, str]  # the record's tags except model/version (bounded)
    value: FieldValue
    breached: bool
    window_end_ns: int

    @property
    def labels(self) -> dict[str, str]:
        """Alert labels: alertname, model, version, severity, series tags, rule labels."""
        out = {
            "alertname": self.rule.name,
            "model": self.model,
            "version": self.version,
            "severity": self.rule.severity,
        }
        out.update(self.series)
        out.update(self.rule.labels)
        return out


def alert_key(model: str, version: str, rule: str, series: Mapping[str, str]) -> str:
    """A readable, bounded identity: ``model/version/rule{tag=value,...}``.

    >>> alert_key("iris", "2", "drift", {"feature": "petal", "detector": "ks"})
    'iris/2/drift{detector=ks,feature=petal}'
    """
    tags = ",".join(f"{k}={series[k]}" for k in sorted(series))
    key = f"{model}/{version}/{rule}" + (f"{{{tags}}}" if tags else "")
    if len(key) > 240:
        key = key[:200] + "~" + hashlib.sha256(key.encode()).hexdigest()[:16]
    return key


def _as_number(v: Any) -> float | None:
    if isinstance(v, bool):
        return 1.0 if v else 0.0
    if isinstance(v, (int, float)):
        return float(v)
    return None


def compare(value: FieldValue, op: str, threshold: float | bool | str) -> bool | None:
    """``value <op> threshold``; None when it cannot be decided (NaN, text vs number).

    >>> compare(0.001, "<", 0.01), compare(True, "==", True), compare(float("nan"), ">", 1)
    (True, True, None)
    """
    x, t = _as_number(value), _as_number(threshold)
    if x is not None and t is not None:
        if math.isnan(x):
            return None
        return {">": x > t, ">=": x >= t, "<": x < t, "<=": x <= t, "==": x == t, "!=": x != t}[op]
    if isinstance(value, str) and isinstance(threshold, str) and op in ("==", "!="):
        return (value == threshold) == (op == "==")
    return None


def tag_matches(actual: str | None, wanted: str | list[str]) -> bool:
    """Whether a series' tag value matches a rule's ``where`` entry (value, glob or list of them)."""
    if actual is None:
        return False
    patterns = wanted if isinstance(wanted, list) else [wanted]
    return any(fnmatch.fnmatchcase(actual, p) for p in patterns)


def evaluate(
    rules: Iterable[AlertRule],
    records: Iterable[Record],
    model: str,
    version: str,
    window_end_ns: int | None = None,
) -> list[Observation]:
    """Every (rule, matching series) of one closed window, with its verdict.

    Records of another model/version (by their tags) are ignored, and so are per-segment
    results unless the rule's ``where`` names ``segment`` (``segment=all``, the
    unsegmented result, is left out of the alert key). A series whose field is
    missing, NaN, or of a type the comparison cannot decide gives no observation: a
    window without the signal neither advances nor resolves an alert. At most
    ``rule.max_series`` series per rule (the first in record order) are kept.
    """
    recs = [
        r for r in records if r.tags.get(T_MODEL, model) == model and str(r.tags.get(T_VERSION, version)) == version
    ]
    if window_end_ns is None:
        window_end_ns = max((r.time_ns for r in recs), default=0)
    out: dict[str, Observation] = {}
    for rule in rules:
        meas, fld = rule.measurement, rule.field
        n = 0
        for rec in recs:
            if rec.measurement != meas or fld not in rec.fields:
                continue
            if not all(tag_matches(rec.tags.get(k), w) for k, w in rule.where.items()):
                continue
            if T_SEGMENT not in rule.where and rec.tags.get(T_SEGMENT, ALL_SEGMENTS) != ALL_SEGMENTS:
                continue  # segments only when asked for: where: {segment: "*"}
            value = rec.fields[fld]
            verdict = compare(value, rule.op, rule.threshold)
            if verdict is None:
                continue
            series = {
                k: str(v)
                for k, v in rec.tags.items()
                if k not in (T_MODEL, T_VERSION) and not (k == T_SEGMENT and v == ALL_SEGMENTS)
            }
            key = alert_key(model, version, rule.name, series)
            if key not in out:
                if n >= rule.max_series:
                    continue
                n += 1
            out[key] = Observation(  # a repeated series keeps its last value
                key=key,
                rule=rule,
                model=model,
                version=version,
                series=series,
                value=value,
                breached=verdict,
                window_end_ns=window_end_ns,
            )
    return list(out.values())
