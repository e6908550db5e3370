"""What an evaluator sees of one closed window (:class:`WindowContext`) and what an evaluator is
(:class:`WindowEvaluator`).

Its own module so that the evaluators (:mod:`detectors.advanced`, :mod:`detectors.adversarial`) and
the runner that calls them (:mod:`detectors.runner`) both import it, and not each other.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, runtime_checkable

import numpy as np

from detectors import records as R
from detectors.frame import Frame
from detectors.quality import FeatureQuality, data_quality, undeclared_features, undeclared_fields
from detectors.records import Record
from detectors.reference import Reference, WindowColumns
from detectors.spec import DriftSpec, FeatureSpec

__all__ = ["WindowContext", "WindowEvaluator"]


@dataclass(frozen=True)
class WindowContext:
    """Everything an evaluator may look at for one closed window.

    ``reference`` is None while the reference is still being collected (first N
    events): drift and histograms are then skipped, quality and counts still run.
    ``cache`` lets evaluators share work within one context (see :meth:`cached`).
    """

    model_id: str
    version: str
    frame: Frame
    reference: Reference | None
    features: tuple[FeatureSpec, ...]
    drift: DriftSpec = field(default_factory=DriftSpec)
    task: str = "classification"
    segments: tuple[str, ...] = ()
    window_start: float = 0.0  # epoch seconds
    window_end: float = 0.0  # epoch seconds
    segment: str | None = None  # None: the whole window (no segment tag)
    adversarial: Any = None  # the model's AdversarialSpec (detectors.adversarial); None: defaults
    # CBPE's calibration (detectors.performance.Calibration), or why there is none yet (str);
    # None: the evaluator fits one on the reference rows' labels, if they have any
    calibration: Any = None
    impact: Any = None  # the model's ImpactConfig (method, target, declared); None: defaults
    # the window's WindowSummary (detectors.summaries) when it kept no rows: counts, quality, drift and
    # histograms come from it, and ``frame`` holds only its reservoir sample (for the row-based evaluators)
    summary: Any = None
    # False: leave out the points that only describe the reference (its histograms, the feature impacts
    # ranked on its rows) — the worker writes them on the windows that start using a reference and on
    # every 100th window of a stream, not on every one (streams.worker.pipeline, reference_points)
    reference_points: bool = True
    cache: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def n_events(self) -> int:
        """Events in the window (the summary's count when the window kept no rows)."""
        return len(self.frame) if self.summary is None else int(self.summary.n)

    @property
    def time_ns(self) -> int:
        """Record timestamp: the window end in nanoseconds."""
        return int(round(self.window_end * 1e9))

    def tags(self, extra: Mapping[str, str] | None = None, *, segmented: bool = True) -> dict[str, str]:
        """Base tags (model, version, and the segment if any, unless ``segmented=False``) + ``extra``."""
        tags = {R.T_MODEL: self.model_id, R.T_VERSION: self.version}
        if segmented and self.segment is not None:
            tags[R.T_SEGMENT] = self.segment
        tags.update(extra or {})
        return tags

    def record(self, measurement: str, tags: dict[str, str], fields: dict[str, Any]) -> Record:
        """A Record at the window end; non-finite float fields are dropped (InfluxDB rejects them)."""
        clean = {
            k: v for k, v in fields.items() if v is not None and not (isinstance(v, float) and not math.isfinite(v))
        }
        return Record(measurement, tags, clean, self.time_ns)

    def cached(self, key: str, fn: Callable[[], Any]) -> Any:
        """``fn()`` computed once per context (e.g. quality, shared by two evaluators)."""
        if key not in self.cache:
            self.cache[key] = fn()
        return self.cache[key]

    @property
    def columns(self) -> WindowColumns:
        """The window's prepared columns (sorted numeric, unicode categories), shared."""
        return self.cached("columns", lambda: WindowColumns(self.frame))

    def quality(self) -> list[FeatureQuality]:
        if self.summary is not None:
            from detectors.summaries import summary_quality

            return self.cached("quality", lambda: summary_quality(self.summary, self.features))
        return self.cached("quality", lambda: data_quality(self.frame, self.features, self.columns))

    def undeclared(self) -> dict[str, Any] | None:
        """Quality fields of the undeclared features the events carried (None: none)."""
        s = self.summary
        if s is None:
            return undeclared_features(self.frame)
        return undeclared_fields(s.n, s.n_unknown_rows, s.unknown)

    def for_segment(self, tag: str, mask: np.ndarray, reference: Reference) -> WindowContext:
        """The context of one segment: its rows, its sub-reference, no further segmenting."""
        return replace(self, frame=self.frame.take(mask), reference=reference, segments=(), segment=tag, cache={})


@runtime_checkable
class WindowEvaluator(Protocol):
    """Anything that turns a window into records."""

    name: str
    segmented: bool  # also run on each segment of the window

    def evaluate(self, ctx: WindowContext) -> list[Record]: ...
