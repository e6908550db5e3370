"""The one call the worker makes when a window closes: window in, Records out.

:func:`evaluate_window` runs a list of :class:`WindowEvaluator` on a
:class:`WindowContext` (the window's events, the reference, the monitor's
specs) and returns the :class:`~detectors.records.Record` list to write. Evaluators
marked ``segmented`` run again on each segment of the window (see below).

The list comes from the factory :func:`default_evaluators`: fresh instances on each
call, so the state some evaluators keep per model (the adversarial monitors, the
online drift detectors) belongs to whoever built the list — one worker, one test —
and never to the module. Keep the list for as long as that state should live (the
worker keeps one for its lifetime). Adding an evaluator to a list is one line::

    evaluators = default_evaluators()
    register(PredictionDrift(), evaluators)   # anything with .name, .segmented, .evaluate(ctx)

Records produced here (names from :mod:`detectors.records`; full field list in
``docs/detectors.md``); every one has ``time_ns`` = window end in ns, so rewriting
a window overwrites its points:

* ``WINDOW`` (model, version): event count, start/end, duration (s), events/s,
  missing and type-error cell totals;
* ``DRIFT`` (model, version, segment, feature, detector = ks/cvm/chi2): statistic,
  p_value, corrected threshold, drift (0/1), psi, js, wasserstein (numeric),
  n_ref, n_cur, rank, engine, window_start;
* ``DRIFT_SUMMARY`` (model, version, segment, detector = univariate): share_drifted,
  n_drifted, n_features, n_skipped, correction, p_val, threshold, drift, engine,
  top_feature, window_start;
* ``QUALITY`` (model, version, segment, feature): counts and rates of missing,
  type errors, out of range, unknown category, null violations;
* ``HISTOGRAM`` / ``REFERENCE_HISTOGRAM`` (model, version, segment, feature):
  ``b00..`` counts, ``e01..`` numeric edges (``e<i>`` = lower edge of bin i),
  ``l00..`` categorical labels (string
  values), n, n_bins, noised, epsilon, kind, window_start.

Segments: unsegmented results carry **no** ``segment`` tag (InfluxQL selects
them with ``WHERE segment = ''``); a segment's results carry ``segment="<feature>=<value>"`` for the reference's top-K values of each
declared segment feature, and ``"<feature>=__other__"`` for the rest. A segment
is evaluated only when the reference has a sub-reference for it and the window
has at least ``reference.min_segment_rows`` rows in it. Each segment is its
own family for the multiple-testing correction; the whole-window summary is the
primary verdict.

Raw feature values never appear: only statistics, reference quantile edges,
and the reference's top-K category names as string field values / segment tag
values (made safe by :func:`~detectors.reference.safe_label`). Sensitive
features publish histograms with Laplace noise and without edges or labels, or
none at all (:class:`Histograms`).

If an evaluator raises, the others still run; :class:`WindowEvaluationError`
then carries the records that were produced and the errors.

One-off fits ahead of the first window: :func:`prepare_evaluators` calls ``prepare(ctx)``
on the evaluators that have one (the adversarial monitor's fit and its extraction
calibration, the feature impacts: ~1–2 s per model and reference) as soon as the
reference exists, so the first window judged against it does not wait for them
(its close → written latency was those seconds).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from detectors import records as R
from detectors.advanced import (
    EstimatedPerformance,
    FeatureImpactEvaluator,
    MultivariateDrift,
    OnlineDrift,
    PredictionDrift,
    status_record,
)
from detectors.adversarial.evaluator import AdversarialEvaluator
from detectors.context import WindowContext, WindowEvaluator  # re-exported: callers build contexts from here
from detectors.errors import DetectorFailure
from detectors.histograms import (
    Histogram,
    histogram_fields,
    privatize,
    reference_histograms,
    window_histograms,
)
from detectors.quality import (
    UNDECLARED,
    FeatureQuality,
    quality_verdicts,
    reference_quality,
    window_totals,
)
from detectors.records import Record
from detectors.reference import Reference, attach_reference_frame, reference_frame
from detectors.spec import FeatureSpec
from detectors.univariate import DriftResult, univariate_drift

# -- built-in evaluators ------------------------------------------------------------------


class WindowStats:
    """``WINDOW``: event count, timing and missing/type-error totals of the window."""

    name = "window"
    segmented = False

    def evaluate(self, ctx: WindowContext) -> list[Record]:
        n = ctx.n_events
        duration = max(ctx.window_end - ctx.window_start, 0.0)
        fields: dict[str, Any] = {
            R.F_N_EVENTS: n,
            R.F_WINDOW_START: float(ctx.window_start),
            R.F_WINDOW_END: float(ctx.window_end),
            R.F_DURATION: float(duration),
            R.F_EVENTS_PER_S: n / duration if duration > 0 else None,
            R.F_N_FEATURES: len(ctx.features),
        }
        fields.update(window_totals(ctx.quality()))
        return [ctx.record(R.WINDOW, ctx.tags(segmented=False), fields)]


class DataQuality:
    """``QUALITY``: per-feature missing / type-error / out-of-range / unknown rates."""

    name = "quality"
    segmented = True

    def evaluate(self, ctx: WindowContext) -> list[Record]:
        out = []
        quality = ctx.quality()
        judged = self.verdicts(ctx, quality)
        for i, q in enumerate(quality):
            fields: dict[str, Any] = {**q.counts(), **q.rates(), R.F_WINDOW_START: float(ctx.window_start), **judged[i]}
            out.append(ctx.record(R.QUALITY, ctx.tags({R.T_FEATURE: q.feature}), fields))
        undeclared = ctx.undeclared()
        if undeclared is not None:
            out.append(
                ctx.record(
                    R.QUALITY,
                    ctx.tags({R.T_FEATURE: UNDECLARED}),
                    {**undeclared, R.F_WINDOW_START: float(ctx.window_start)},
                )
            )
        return out

    @staticmethod
    def verdicts(ctx: WindowContext, quality: list[FeatureQuality]) -> list[dict[str, Any]]:
        """Each feature's judged rates (:func:`detectors.quality.quality_verdicts`) against the reference
        rows' chunks of the window's size, at the drift family level; empty fields without reference rows."""
        reference = ctx.reference
        rows = None if reference is None else reference_frame(reference)
        if reference is None or rows is None or not ctx.n_events:
            return [{} for _ in quality]
        t = ctx.drift.threshold
        ref = reference_quality(rows, ctx.features, ctx.n_events, t.min_chunks, t.max_chunks, reference._cache)
        return quality_verdicts(quality, ctx.features, ref, ctx.drift.p_val, t.sd_multiplier)


class DataDrift:
    """``DRIFT`` per feature and ``DRIFT_SUMMARY`` per window (univariate tests)."""

    name = "data_drift"
    segmented = True

    def result(self, ctx: WindowContext) -> DriftResult | None:
        ref = ctx.reference
        if ref is None:
            return None
        names = [f.name for f in ctx.features if f.name in ref.numeric or f.name in ref.categorical]
        if ctx.summary is not None:
            from detectors.summaries import summary_drift

            return ctx.cached("univariate_drift", lambda: summary_drift(ctx.summary, ref, ctx.drift, names))
        return ctx.cached(
            "univariate_drift", lambda: univariate_drift(ctx.frame, ref, ctx.drift, names, columns=ctx.columns)
        )

    def evaluate(self, ctx: WindowContext) -> list[Record]:
        res = self.result(ctx)
        if res is None:
            return []
        start = float(ctx.window_start)
        out = []
        for f in res.features:
            fields = {
                R.F_STATISTIC: f.statistic,
                R.F_P_VALUE: f.p_value,
                R.F_THRESHOLD: f.threshold,
                R.F_DRIFT: int(f.drift),
                R.F_PSI: f.psi,
                R.F_JS: f.js,
                R.F_WASSERSTEIN: f.wasserstein,
                R.F_N_REF: f.n_ref,
                R.F_N_CUR: f.n_cur,
                R.F_RANK: f.rank,
                R.F_ENGINE: res.engine,
                R.F_WINDOW_START: start,
                **(f.verdict.fields() if f.verdict else {}),
            }
            tags = ctx.tags({R.T_FEATURE: f.feature, R.T_DETECTOR: f.test})
            out.append(ctx.record(R.DRIFT, tags, fields))
        summary = {
            R.F_SHARE_DRIFTED: float(res.share_drifted),
            R.F_N_DRIFTED: res.n_drifted,
            R.F_N_FEATURES: res.n_features,
            R.F_N_SKIPPED: len(res.skipped),
            R.F_CORRECTION: res.correction,
            R.F_P_VAL: float(res.p_val),
            R.F_THRESHOLD_METHOD: res.threshold_method,
            R.F_THRESHOLD: float(res.threshold),
            R.F_DRIFT: int(res.drift),
            R.F_ENGINE: res.engine,
            R.F_TOP_FEATURE: res.features[0].feature if res.features else None,
            R.F_WINDOW_START: start,
        }
        out.append(ctx.record(R.DRIFT_SUMMARY, ctx.tags({R.T_DETECTOR: R.SUMMARY_DETECTOR}), summary))
        return out


class Histograms:
    """``HISTOGRAM`` and ``REFERENCE_HISTOGRAM`` per feature.

    ``sensitive="noise"``: sensitive features get Laplace noise at ``epsilon``
    (default None: each feature's ``FeatureSpec.dp_epsilon``; a feature whose
    ``dp_epsilon`` is None has its histograms withheld)
    (the reference's noised once per reference object and then reused, so
    repeated windows do not re-spend the budget on it) and no edges or labels;
    ``sensitive="withhold"``: no histograms at all for them. ``rng`` defaults to
    OS entropy (noise must not be predictable).
    """

    name = "histograms"
    segmented = True

    def __init__(
        self,
        epsilon: float | None = None,
        sensitive: Literal["noise", "withhold"] = "noise",
        rng: np.random.Generator | None = None,
    ) -> None:
        if sensitive not in ("noise", "withhold"):
            raise ValueError(f"sensitive must be 'noise' or 'withhold', got {sensitive!r}")
        if epsilon is not None and not epsilon > 0:
            raise ValueError(f"epsilon must be > 0, got {epsilon}")
        self.epsilon = None if epsilon is None else float(epsilon)  # None: each feature's dp_epsilon
        self.sensitive = sensitive
        self.rng = rng if rng is not None else np.random.default_rng()

    def _epsilon(self, spec: FeatureSpec) -> float | None:
        """The feature's noise level, or None when its histograms are withheld."""
        if self.sensitive == "withhold":
            return None
        if self.epsilon is not None:
            return self.epsilon
        return getattr(spec, "dp_epsilon", 1.0)

    def _publish(self, h: Histogram, sensitive: bool, eps: float | None = None) -> Histogram | None:
        if not sensitive:
            return h
        if eps is None:
            return None
        return privatize(h, eps, self.rng)

    def evaluate(self, ctx: WindowContext) -> list[Record]:
        ref = ctx.reference
        if ref is None:
            return []
        specs = {f.name: f for f in ctx.features}
        names = [n for n in specs if n in ref.numeric or n in ref.categorical]
        out = []
        start = float(ctx.window_start)
        if ctx.summary is not None:
            from detectors.summaries import summary_histograms

            cur = summary_histograms(ctx.summary, ref, names)
        else:
            cur = window_histograms(ctx.frame, ref, names, columns=ctx.columns)
        base = reference_histograms(ref, names)
        for h, r in zip(cur, base):
            sensitive = specs[h.feature].sensitive
            tags = ctx.tags({R.T_FEATURE: h.feature})
            eps = self._epsilon(specs[h.feature]) if sensitive else None
            pub = self._publish(h, sensitive, eps)
            if pub is None:
                continue
            out.append(
                ctx.record(R.HISTOGRAM, tags, {**histogram_fields(pub), "kind": h.kind, R.F_WINDOW_START: start})
            )
            if not ctx.reference_points:
                continue
            if sensitive and eps is not None:  # noise the reference once per reference object (published: eps set)
                key = ("noised_reference_histogram", h.feature, eps)
                if key not in ref._cache:
                    ref._cache[key] = privatize(r, eps, self.rng)
                r = ref._cache[key]
            out.append(
                ctx.record(
                    R.REFERENCE_HISTOGRAM, tags, {**histogram_fields(r), "kind": h.kind, R.F_WINDOW_START: start}
                )
            )
        return out


def default_evaluators(
    *, online_cache_dir: str | None = None, online_background: bool = False
) -> list[WindowEvaluator]:
    """A new list of new evaluators, in the order :func:`evaluate_window` runs them.

    The four built-ins (window stats, quality, univariate drift, histograms), then the
    adversarial scores, prediction drift, multivariate drift, CBPE, feature impact and
    the online drift detectors (:mod:`detectors.advanced`). ``online_cache_dir``: where
    the online detectors cache their thresholds; ``online_background``: they calibrate
    on a thread of their own (the worker sets both).

    >>> a, b = default_evaluators(), default_evaluators()
    >>> [e.name for e in a][:4]
    ['window', 'quality', 'data_drift', 'histograms']
    >>> any(x is y for x, y in zip(a, b))  # no state shared between two lists
    False
    """
    return [
        WindowStats(),
        DataQuality(),
        DataDrift(),
        Histograms(),
        AdversarialEvaluator(),
        PredictionDrift(),
        MultivariateDrift(),
        EstimatedPerformance(),
        FeatureImpactEvaluator(),
        OnlineDrift(cache_dir=online_cache_dir, background=online_background),
    ]


def register(evaluator: WindowEvaluator, registry: list[WindowEvaluator]) -> WindowEvaluator:
    """Add ``evaluator`` to ``registry`` (a list the caller owns), replacing one of the same name."""
    if not isinstance(evaluator, WindowEvaluator):
        raise TypeError(f"{evaluator!r} is not a WindowEvaluator (needs name, segmented, evaluate)")
    registry[:] = [e for e in registry if e.name != evaluator.name]
    registry.append(evaluator)
    return evaluator


class WindowEvaluationError(DetectorFailure):
    """One or more evaluators failed; ``records`` holds what the others produced."""

    def __init__(self, records: list[Record], errors: list[tuple[str, str | None, BaseException]]):
        self.records = records
        self.errors = errors  # (evaluator name, segment tag or None, exception)
        detail = "; ".join(f"{name} [{seg or 'whole window'}]: {type(e).__name__}: {e}" for name, seg, e in errors)
        super().__init__(f"{len(errors)} evaluator(s) failed: {detail}")


def segment_contexts(ctx: WindowContext) -> list[WindowContext]:
    """The segment contexts of a window (bounded: reference top-K values + ``__other__``)."""
    ref = ctx.reference
    if ref is None or not ctx.segments or ctx.summary is not None:  # a summary keeps no per-segment counts
        return []
    out = []
    for feature in ctx.segments:
        col = ctx.frame.categorical.get(feature)
        if col is None or feature not in ref.segment_values:
            continue
        for tag, mask in ref.segment_masks(feature, col):
            sub = ref.segments.get(tag)
            if sub is not None and int(mask.sum()) >= ref.min_segment_rows:
                _attach_segment_rows(ref, feature, tag, sub)
                out.append(ctx.for_segment(tag, mask, sub))
    return out


def _attach_segment_rows(ref: Reference, feature: str, tag: str, sub: Reference) -> None:
    """Give a segment's sub-reference its rows (the parent's rows of that segment, in order),
    once: the chunk thresholds (:mod:`detectors.thresholds`) judge segments on their own chunks."""
    if reference_frame(sub) is not None or ("segment_rows_tried", tag) in sub._cache:
        return
    sub._cache[("segment_rows_tried", tag)] = True
    rows = reference_frame(ref)
    col = None if rows is None else rows.categorical.get(feature)
    if rows is None or col is None:
        return
    mask = dict(ref.segment_masks(feature, col)).get(tag)
    if mask is not None and mask.any():
        attach_reference_frame(sub, rows.take(mask))


NEEDS_EVERY_ROW = frozenset({"online_drift", "adversarial"})
"""Evaluators that follow every event (a stream of tests, per-source state): not run on a window that kept
a summary instead of its rows (its ``frame`` is a sample); they write a ``dw_status`` saying so."""
SUMMARY_SKIP = (
    "the window kept a summary, not its rows (a window above the summary size): this detector needs every event"
)


def prepare_evaluators(
    ctx: WindowContext, evaluators: Sequence[WindowEvaluator], *, summarised: bool = False
) -> list[tuple[str, BaseException]]:
    """Run the one-off per-model, per-reference fits of ``evaluators`` before the first window.

    ``ctx`` carries the model's specs and the reference; its frame may be empty: a
    ``prepare(ctx)`` fits from the reference only, writes no record and leaves the
    evaluator as the first :func:`evaluate_window` would have (same fits, same cache),
    so the windows' results are the same with or without it. ``summarised``: the model's
    windows keep summaries, so the evaluators that need every row (:data:`NEEDS_EVERY_ROW`)
    will not run and are not fitted. Returns the ``(evaluator name, error)`` of the
    prepares that failed, for the caller to report as the first window's evaluation would have (an
    evaluator keeps the outcome of its fit either way: an adversarial monitor that failed stays off).
    """
    errors: list[tuple[str, BaseException]] = []
    for ev in evaluators:
        prepare = getattr(ev, "prepare", None)
        if prepare is None or (summarised and ev.name in NEEDS_EVERY_ROW):
            continue
        try:
            prepare(ctx)
        except Exception as e:  # reported by the caller
            errors.append((ev.name, e))
    return errors


def evaluate_window(ctx: WindowContext, evaluators: Sequence[WindowEvaluator] | None = None) -> list[Record]:
    """Run ``evaluators`` on the window and its segments.

    ``None``: a fresh :func:`default_evaluators` list for this one window, so nothing
    is remembered between calls (the adversarial monitors refit, the online detectors
    start again): for a series of windows, build the list once and pass it each time.
    """
    evaluators = default_evaluators() if evaluators is None else evaluators
    out: list[Record] = []
    errors: list[tuple[str, str | None, BaseException]] = []

    def run(ev: WindowEvaluator, c: WindowContext) -> None:
        try:
            if c.summary is not None and ev.name in NEEDS_EVERY_ROW:
                out.append(status_record(c, ev.name, SUMMARY_SKIP))
                return
            out.extend(ev.evaluate(c))
        except Exception as e:  # isolate evaluators: one bug must not lose the others' results
            errors.append((ev.name, c.segment, e))

    for ev in evaluators:
        run(ev, ctx)
    segmented = [ev for ev in evaluators if getattr(ev, "segmented", False)]
    if segmented:
        for sub in segment_contexts(ctx):
            for ev in segmented:
                run(ev, sub)
    if errors:
        raise WindowEvaluationError(out, errors)
    return out
