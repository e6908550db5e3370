"""Configuration of the adversarial detectors (``adversarial:`` in a model's monitor).

Pure pydantic, no numpy/scipy import, so ``streams.worker.monitors`` can load it cheaply.
Every threshold here is a *rate* that the detectors calibrate on the reference, not a
raw distance: the defaults mean "a benign window is flagged at most 1% of the time"
(combined score), "a benign client is flagged at most 1 in 100,000 times" (extraction).

>>> AdversarialSpec().outlier.method, AdversarialSpec().extraction.fpr
('mahalanobis', 1e-05)
>>> AdversarialSpec.model_validate({"squeeze": {"model": "m.joblib"}}).squeeze.enabled
True
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Engine = Literal["native", "alibi"]
RateTest = Literal["beta-binomial", "binomial"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OutlierSpec(_Strict):
    """Off-manifold inputs: an outlier score per event against the reference."""

    enabled: bool = True
    method: Literal["mahalanobis", "iforest"] = "mahalanobis"
    engine: Engine = Field("native", description="alibi: alibi-detect's detector (Mahalanobis needs PyTorch)")
    rate: float = Field(0.05, gt=0, lt=0.5, description="reference exceedance rate the threshold is set at")
    holdout: float = Field(0.5, gt=0.1, lt=0.9, description="share of reference rows used to calibrate, not fit")
    min_eigenvalue: float = Field(1e-6, gt=0, description="Mahalanobis: drop directions with less variance")
    n_estimators: int = Field(100, ge=10, le=1000, description="iforest: number of trees")


class MarginSpec(_Strict):
    """Near-boundary pressure: low-margin predictions (top-1 minus top-2 probability)."""

    enabled: bool = True
    rate: float = Field(0.1, gt=0, lt=0.5, description="reference share of low-margin predictions")
    warmup_events: int = Field(
        1000, ge=20, description="reference without probabilities: calibrate on the first N predictions of the stream"
    )


class ExtractionSpec(_Strict):
    """PRADA-style model-extraction detection per source (client id)."""

    enabled: bool = True
    fpr: float = Field(1e-5, gt=0, lt=0.5, description="share of benign sources ever flagged (over `horizon` queries)")
    buffer: int = Field(128, ge=8, le=4096, description="past queries kept per source for distances")
    distances: int = Field(
        256, ge=20, le=5000, description="past minimum distances kept per source (Shapiro-Wilk sample)"
    )
    min_queries: int = Field(100, ge=20, description="distances needed before a source is tested")
    test_every: int = Field(25, ge=1, description="test a source again after this many new distances")
    focus: float = Field(0.25, gt=0, le=1, description="benign clients may concentrate on this share of the data")
    horizon: int = Field(600, ge=50, description="calibration: length of simulated benign sequences")
    simulations: int = Field(1000, ge=50, le=20000, description="calibration: simulated benign sources")
    max_sources: int = Field(5000, ge=1, description="sources tracked at once (least recently seen evicted)")
    idle_seconds: float = Field(3600.0, gt=0, description="forget a source after this long without queries")
    top_k: int = Field(10, ge=0, le=1000, description="per-source records per window (most suspicious first)")

    @model_validator(mode="after")
    def _check(self) -> ExtractionSpec:
        if self.min_queries > self.distances:
            raise ValueError("min_queries must not exceed distances")
        return self


class ContrastSpec(_Strict):
    """Source contrast: does one client's low-margin / off-manifold rate stand out from the rest of its window?

    Data drift moves every client's traffic alike, so it does not raise this test; the
    population rates against the reference (which drift does raise) are reported but,
    by default, kept out of the combined score.
    """

    enabled: bool = True
    min_events: int = Field(10, ge=2, description="a source is tested once it has this many events in the window")
    min_excess: float = Field(
        0.25, ge=0, lt=1, description="and its rate exceeds the rest of the window's by this much"
    )


class SqueezeSpec(_Strict):
    """Optional model in the loop: feature-squeezing consistency (Xu et al. 2018).

    ``model`` is a scikit-learn estimator saved with joblib/pickle. **Loading it runs code
    from that file**: point it only at files you trust.
    """

    model: Path | None = Field(None, description="estimator file (joblib/pickle) with predict_proba")
    bins: int = Field(16, ge=2, le=1024, description="numeric features squeezed to this many reference quantile bins")
    sample: int = Field(200, ge=10, description="events per window scored (the model is called twice per event)")
    rate: float = Field(0.05, gt=0, lt=0.5, description="reference exceedance rate of the squeeze distance")

    @property
    def enabled(self) -> bool:
        return self.model is not None


class AdversarialSpec(_Strict):
    """All adversarial detectors of one model (see ``docs/adversarial.md``)."""

    enabled: bool = True
    outlier: OutlierSpec = OutlierSpec()
    margin: MarginSpec = MarginSpec()
    extraction: ExtractionSpec = ExtractionSpec()
    squeeze: SqueezeSpec = SqueezeSpec()
    contrast: ContrastSpec = ContrastSpec()
    score_population: bool = Field(
        False,
        description="also put the population rates against the reference in the "
        "combined score (flags on data drift; for streams without client ids)",
    )
    alpha: float = Field(
        0.01, gt=0, lt=0.5, description="a benign window's combined score exceeds 1 - alpha at this rate"
    )
    test: RateTest = Field(
        "beta-binomial", description="rate test against the reference (beta-binomial accounts for its size)"
    )
    warmup_events: int | None = Field(
        None,
        ge=100,
        description="no reference rows attached: fit on the first N events of each model version (off by default)",
    )
    seed: int = 0
