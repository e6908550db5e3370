"""Declarative specs the detectors run from.

These are the pure parts of a monitor's configuration: what a feature is and
which tests run with which thresholds. ``streams.worker.monitors`` composes them with
the I/O parts (windows, reference source, alert routes) into the YAML config.

>>> FeatureSpec(name="age", kind="numeric", min=0, max=130).kind
'numeric'
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

FeatureKind = Literal["numeric", "categorical"]
"""Kinds the detectors know; the config also accepts ``kind: boolean`` (see :class:`FeatureSpec`)."""
Engine = Literal["native", "alibi"]
Correction = Literal["bonferroni", "fdr", "none"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FeatureSpec(_Strict):
    """One model input: its kind and the expectations data quality checks.

    ``kind: boolean`` declares a categorical feature of truth values: ``true``,
    ``True``, ``1``, ``yes`` (and their opposites) — in events and in reference
    files alike — are read as one category, ``"true"`` / ``"false"``
    (:mod:`detectors.values`); anything else is a type error. It is stored as
    ``kind: categorical`` with ``boolean: true``, so every detector treats it as
    the categorical feature it is.

    >>> f = FeatureSpec(name="churned", kind="boolean")
    >>> f.kind, f.boolean
    ('categorical', True)
    """

    name: str = Field(min_length=1, max_length=128)
    kind: FeatureKind
    boolean: bool = Field(default=False, description="categorical of truth values (config: kind: boolean)")
    min: float | None = None
    max: float | None = None
    allowed: list[str] | None = Field(default=None, description="allowed categories (categorical)")
    nullable: bool = True
    sensitive: bool = Field(default=False, description="histograms noised (DP) or withheld")
    dp_epsilon: float | None = Field(
        default=1.0,
        gt=0,
        description="sensitive features: Laplace noise at this epsilon per published histogram "
        "(smaller = more private); null = histograms withheld",
    )

    @model_validator(mode="before")
    @classmethod
    def _boolean_kind(cls, data):
        if isinstance(data, dict) and data.get("kind") == "boolean":
            data = {**data, "kind": "categorical", "boolean": True}
        elif isinstance(data, dict) and "kind" in data and data["kind"] not in ("numeric", "categorical"):
            raise ValueError(f"kind must be numeric, categorical or boolean, not {data['kind']!r}")
        return data

    @model_validator(mode="after")
    def _check(self) -> FeatureSpec:
        if self.boolean and self.kind != "categorical":
            raise ValueError("boolean applies to categorical features (write kind: boolean)")
        if self.boolean and self.allowed is not None and not set(self.allowed) <= {"true", "false"}:
            raise ValueError(f"a boolean feature's values are 'true' and 'false', not {self.allowed}")
        if self.kind == "categorical" and (self.min is not None or self.max is not None):
            raise ValueError("min/max apply to numeric features only")
        if self.kind == "numeric" and self.allowed is not None:
            raise ValueError("allowed applies to categorical features only")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self


def _check_window_sizes(sizes: list[int]) -> list[int]:
    if len(set(sizes)) != len(sizes):
        raise ValueError(f"window_sizes must be distinct, got {sizes}")
    return sorted(sizes)


class OnlineSpec(_Strict):
    """Event-by-event drift (``CVMOnline``) on a few key numeric features (``drift.online``).

    Off while ``features`` is empty. Thresholds are calibrated so that, with no
    change, a feature raises a false alarm once per ``ert`` events on average;
    calibration is paid once per (reference size, ERT, window sizes) and cached on
    disk. Calibration cost grows with ``n_bootstraps`` x ``max(window_sizes)``²
    (measured on a shared 2-core machine, reference of 1000, 20,000 simulated
    streams: windows [20, 50] ~7 s once; [20, 100] ~35 s; [50, 200] ~145 s), so the
    default windows are small: the online test is for fast reaction to clear
    changes, the windowed tests find the small ones.

    >>> OnlineSpec(features=["x"]).window_sizes
    [20, 50]
    """

    features: list[str] = Field(
        default_factory=list, max_length=20, description="numeric features watched event by event (empty: off)"
    )
    ert: float = Field(10_000.0, gt=1, le=1e7, description="expected events between false alarms, per feature")
    window_sizes: list[int] = Field(
        default_factory=lambda: [20, 50],
        min_length=1,
        max_length=4,
        description="sliding test windows (events); small = fast on big changes",
    )
    n_bootstraps: int = Field(
        20_000, ge=1_000, le=1_000_000, description="simulated null streams for calibration (>= ERT; ideally 10x)"
    )
    engine: Engine = "native"

    @model_validator(mode="after")
    def _check(self) -> OnlineSpec:
        if any(w < 2 or w > 1000 for w in self.window_sizes):
            raise ValueError(f"window_sizes must be between 2 and 1000 events, got {self.window_sizes}")
        object.__setattr__(self, "window_sizes", _check_window_sizes(self.window_sizes))
        if len(set(self.features)) != len(self.features):
            raise ValueError(f"features are listed twice: {self.features}")
        if self.features and self.n_bootstraps * (1 - (1 - 1 / self.ert)) < 1:  # as detectors.online checks it
            raise ValueError(
                f"n_bootstraps ({self.n_bootstraps}) must be larger than ert ({self.ert:g}) "
                "for the calibration to reach that false-alarm rate"
            )
        return self


class ErrorStreamSpec(_Strict):
    """Concept drift on the error stream (``labels.online``): ``FETOnline`` on 0/1 errors.

    Each joined label gives one 0/1 value: the prediction was wrong
    (classification), or its absolute error exceeded ``error_threshold``
    (regression; default: the ``error_quantile`` quantile of the reference's
    absolute errors). The reference is the error stream of the first
    ``reference_size`` joined labels of the model. ``ert`` counts joined labels.

    Defaults (measured by ``driftwatch bench real``, docs/detection-science.md): a reference
    of 5,000 labels and windows of 100, 500 and 2,000. A rise of the error rate by half
    (0.056 → 0.084 on NannyML's car loans) needs about 2,000 labels to stand out at an ERT of
    100,000; with the former 1,000-label reference and windows up to 500 the detector found it
    after 3,173 labels, River's ADWIN after 1,959, now after ~1,700 — while big rises are
    still found by the 100-label window within tens of labels.

    >>> ErrorStreamSpec().ert, ErrorStreamSpec().window_sizes, ErrorStreamSpec().reference_size
    (100000.0, [100, 500, 2000], 5000)
    """

    enabled: bool = True
    reference_size: int = Field(5000, ge=50, le=1_000_000, description="joined labels whose errors form the reference")
    ert: float = Field(100_000.0, gt=1, le=1e8, description="expected joined labels between false alarms")
    window_sizes: list[int] = Field(default_factory=lambda: [100, 500, 2000], min_length=1, max_length=4)
    n_bootstraps: int = Field(5_000, ge=100, le=1_000_000, description="simulated null streams for calibration")
    error_threshold: float | None = Field(None, ge=0, description="regression: |error| above this counts as wrong")
    error_quantile: float = Field(
        0.9, gt=0, lt=1, description="regression without error_threshold: this quantile of the reference's |errors|"
    )
    engine: Engine = "native"

    @model_validator(mode="after")
    def _check(self) -> ErrorStreamSpec:
        if any(w < 2 or w > 10_000 for w in self.window_sizes):
            raise ValueError(f"window_sizes must be between 2 and 10000 labels, got {self.window_sizes}")
        object.__setattr__(self, "window_sizes", _check_window_sizes(self.window_sizes))
        pooled = self.n_bootstraps * max(2000, 4 * max(self.window_sizes))  # simulated steady-state labels
        if self.enabled and pooled < 5 * self.ert:
            raise ValueError(
                f"n_bootstraps ({self.n_bootstraps}) is too small for ert {self.ert:g}: "
                f"need at least {int(-(-5 * self.ert // max(2000, 4 * max(self.window_sizes))))}"
            )
        return self


ThresholdMethod = Literal["p_value", "reference_chunks", "effect_size", "both"]


class ThresholdSpec(_Strict):
    """How a window's drift verdict is made (``drift.threshold``; :mod:`detectors.thresholds`).

    * ``p_value`` — the classical test: p < the corrected level (``correction``);
    * ``reference_chunks`` — the test statistic above its own variability across
      chunks of the reference of the window's size, kept in time order (NannyML's
      ``StandardDeviationThreshold``: mean + k·sd of the chunk values);
    * ``effect_size`` — an effect-size floor (Evidently's large-sample default):
      Wasserstein distance / reference std > ``numeric_floor`` for numeric
      features, Jensen–Shannon distance (natural log) > ``categorical_floor``
      for categorical ones;
    * ``both`` — outside the chunk band, the effect above the band of the
      reference chunks' own effect sizes (log-normal), **and** above the floor.

    Where the chunk band reaches the largest value the statistic can take (short
    windows of a series that moves by itself), the chunk methods judge the effect
    against the chunks' effects instead: a band nothing can cross is no threshold.

    Without enough reference chunks (a reference shorter than ``min_chunks``
    windows, or without its rows) the chunk methods fall back to ``p_and_effect``:
    p below the corrected level and effect above the floor.

    ``sd_multiplier`` None: k is derived from the family level (``p_val``, or the
    level the alarm budget allots) split over the features, ``k = Φ⁻¹(1 - level / n)``.

    >>> ThresholdSpec().method
    'both'
    """

    method: ThresholdMethod = "both"
    sd_multiplier: float | None = Field(
        default=None, gt=0, le=20, description="k of mean + k·sd (None: from the level)"
    )
    min_chunks: int = Field(
        default=5, ge=2, le=1000, description="reference chunks needed for a band (fewer: effect_size)"
    )
    max_chunks: int = Field(default=50, ge=2, le=1000, description="chunks used at most (spread evenly)")
    numeric_floor: float = Field(default=0.1, gt=0, description="Wasserstein distance / reference std")
    categorical_floor: float = Field(
        default=0.1, gt=0, lt=1, description="Jensen-Shannon distance (natural log, as Evidently)"
    )

    @model_validator(mode="after")
    def _check(self) -> ThresholdSpec:
        if self.max_chunks < self.min_chunks:
            raise ValueError(f"max_chunks ({self.max_chunks}) is below min_chunks ({self.min_chunks})")
        return self


class DriftSpec(_Strict):
    """Which univariate/multivariate drift tests run and how verdicts are made."""

    engine: Engine = "native"
    numeric_test: Literal["ks", "cvm"] = "ks"
    categorical_test: Literal["chi2"] = "chi2"
    p_val: float = Field(default=0.05, gt=0, lt=1, description="family-wise / FDR level")
    correction: Correction = "bonferroni"
    multivariate: Literal["none", "mmd", "pca"] = "none"
    histogram_bins: int = Field(default=10, ge=2, le=100)
    online: OnlineSpec = Field(
        default_factory=OnlineSpec, description="event-by-event drift on key features (off without features)"
    )
    threshold: ThresholdSpec = Field(
        default_factory=ThresholdSpec,
        description="how verdicts are made: p_value | reference_chunks | "
        "effect_size | both (docs/detection-science.md)",
    )
