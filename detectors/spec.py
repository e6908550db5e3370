"""Declarative specs the detectors run from.

These are the pure parts of a monitor's configuration: what a feature is and
which tests run with which thresholds. ``streams.monitors`` composes them with
the I/O parts (windows, reference source, alert routes) into the YAML config.

>>> FeatureSpec(name="age", kind="numeric", min=0, max=130).kind
'numeric'
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

FeatureKind = Literal["numeric", "categorical"]
Engine = Literal["native", "alibi"]
Correction = Literal["bonferroni", "fdr", "none"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FeatureSpec(_Strict):
    """One model input: its kind and the expectations data quality checks."""

    name: str = Field(min_length=1, max_length=128)
    kind: FeatureKind
    min: float | None = None
    max: float | None = None
    allowed: list[str] | None = Field(default=None, description="allowed categories (categorical)")
    nullable: bool = True
    sensitive: bool = Field(default=False, description="histograms noised (DP) or withheld")
    dp_epsilon: float | None = Field(
        default=1.0, gt=0,
        description="sensitive features: Laplace noise at this epsilon per published histogram "
                    "(smaller = more private); null = histograms withheld")

    @model_validator(mode="after")
    def _check(self) -> "FeatureSpec":
        if self.kind == "categorical" and (self.min is not None or self.max is not None):
            raise ValueError("min/max apply to numeric features only")
        if self.kind == "numeric" and self.allowed is not None:
            raise ValueError("allowed applies to categorical features only")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
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
