"""One model version's adversarial monitor: fitted on reference rows, run on every window.

:class:`AdversarialMonitor` ties the components together. Each per-event score is
judged twice: against the reference (**population** rate — "the inputs moved": any
data drift raises it) and against the rest of the window, source by source
(**source contrast** — "someone is probing": drift moves every client alike, an
attacker's own client id stands out; :mod:`detectors.adversarial.contrast`).

==================  ===========================================  ===============================
component           per event                                    window test
==================  ===========================================  ===============================
outlier             outlier score beyond the reference threshold  exceedances vs ref rate
low_margin          top-1 − top-2 probability below threshold     low-margin count vs ref rate
squeeze             (optional) L1 change of predict_proba when    exceedances vs ref rate
                    inputs are squeezed
outlier_source      as ``outlier``                                each source vs the rest (Fisher)
low_margin_source   as ``low_margin``                             each source vs the rest (Fisher)
extraction          per source: PRADA Shapiro–Wilk W < δ          flagged sources vs ``fpr``
==================  ===========================================  ===============================

**Combined score.** The components in the score — by default the source
contrasts and extraction; the population rates too with ``score_population:
true`` (they flag on data drift) — each give a one-sided p-value (calibrated:
uniform or conservative on benign windows). They are combined with Bonferroni,
``p = min(1, K · min_k p_k)`` over the ``K`` components that ran, and
``score = 1 − p`` ∈ [0, 1]. So a benign window reaches ``score ≥ 1 − alpha``
(``flagged``) with probability at most ``alpha``, whatever the dependence
between components; evasion windows saturate near 1. ``flagged_by`` names the
components whose own p-value is below ``alpha / K``. The extraction
component's p-value is the binomial tail of the number of flagged sources
among the window's tested sources at the per-source false-flag rate ``fpr`` —
one flagged client among many does not by itself move the window score; its
``dw_source`` record (``extraction_flag``, ``flag``, ``flagged_by``) is the
signal to alert on.

Inputs: numeric features standardised by the reference (missing → reference
mean); **categorical features are not used** by the outlier and extraction
components (they enter the squeeze component only through the model, and not
at all in this version). Regression models get outlier, extraction (and no
margin) components.

Records (names in :mod:`detectors.records`, fields in ``docs/adversarial.md``):
``ADVERSARIAL`` per window (tags model, version) and ``SOURCE`` for the
``top_k`` most suspicious sources active in the window (tags model, version,
source).

>>> import numpy as np
>>> from detectors.frame import Frame, TextGroups
>>> from detectors.spec import FeatureSpec
>>> rng = np.random.default_rng(0)
>>> def frame(X, src=None):
...     n = len(X)
...     return Frame.from_columns(event_id=np.arange(n).astype(str), event_time=np.arange(n, dtype=float),
...         source_id=np.array(src if src is not None else ["c"] * n, dtype=object),
...         numeric={"a": X[:, 0], "b": X[:, 1]})
>>> feats = [FeatureSpec(name="a", kind="numeric"), FeatureSpec(name="b", kind="numeric")]
>>> from detectors.adversarial.spec import AdversarialSpec
>>> spec = AdversarialSpec.model_validate({"extraction": {"simulations": 60, "horizon": 200}})
>>> mon = AdversarialMonitor.fit(frame(rng.normal(size=(1000, 2))), feats, spec, task="regression")
>>> res = mon.evaluate(frame(rng.normal(size=(500, 2))))
>>> bool(res.score < 0.99), sorted(res.components), sorted(res.population)
(True, ['extraction'], ['outlier'])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from detectors import records as R
from detectors.adversarial.contrast import ContrastResult, source_contrast
from detectors.adversarial.extraction import ExtractionCalibration, ExtractionTracker, SourceUpdate, calibrate
from detectors.adversarial.margin import MarginDetector, frame_margins
from detectors.adversarial.outlier import ComponentResult, OutlierDetector, Standardizer
from detectors.adversarial.spec import AdversarialSpec
from detectors.adversarial.squeeze import SqueezeDetector
from detectors.adversarial.stats import bonferroni_min
from detectors.frame import Frame, TextGroups
from detectors.records import Record
from detectors.reference import safe_label
from detectors.spec import FeatureSpec

__all__ = ["AdversarialMonitor", "AdversarialResult", "numeric_matrix"]


def numeric_matrix(frame: Frame, names: Sequence[str]) -> np.ndarray:
    """The named numeric columns as an (n, d) float matrix (absent columns all NaN)."""
    n = len(frame)
    cols = [np.asarray(frame.numeric.get(k, np.full(n, np.nan)), dtype=np.float64) for k in names]
    return np.column_stack(cols).reshape(n, len(names)) if cols else np.zeros((n, 0))


@dataclass
class AdversarialResult:
    """Everything one window produced (see :meth:`AdversarialMonitor.records`)."""

    n_events: int
    components: dict[str, ComponentResult | ContrastResult]  # the ones in the combined score
    p_value: float
    score: float
    flagged: bool
    alpha: float
    squeeze_mean: float = float("nan")
    sources: SourceUpdate | None = None
    extraction_flagged: int = 0
    extraction_share: float = 0.0
    sources_tracked: int = 0
    sources_evicted: int = 0
    sources_expired: int = 0
    delta: float = float("nan")
    notes: list[str] = field(default_factory=list)
    # population rates against the reference ("the inputs moved": data drift raises them too);
    # in the combined score only with ``score_population: true``
    population: dict[str, ComponentResult] = field(default_factory=dict)
    flagged_by: list[str] = field(default_factory=list)  # components whose Bonferroni share is below alpha
    top_component: str | None = None  # the component with the smallest p-value

    @property
    def suspects(self) -> dict[str, str]:
        """Source -> comma-joined components that flagged it in this window (extraction included)."""
        out: dict[str, list[str]] = {}
        for name in self.flagged_by:
            c = self.components[name]
            if isinstance(c, ContrastResult) and c.source is not None:
                out.setdefault(c.source, []).append(name)
        if self.sources is not None:
            for s in self.sources.source[self.sources.flagged].tolist():
                out.setdefault(str(s), []).append("extraction")
        return {k: ",".join(v) for k, v in out.items()}


class AdversarialMonitor:
    """Fitted adversarial detectors of one model version, plus per-source extraction state."""

    def __init__(
        self,
        spec: AdversarialSpec,
        names: list[str],
        standardizer: Standardizer | None,
        outlier: OutlierDetector | None,
        margin: MarginDetector | None,
        squeeze: SqueezeDetector | None,
        tracker: ExtractionTracker | None,
        task: str = "classification",
        notes: list[str] | None = None,
    ) -> None:
        self.spec = spec
        self.names = names
        self.standardizer = standardizer
        self.outlier = outlier
        self.margin = margin
        self.squeeze = squeeze
        self.tracker = tracker
        self.task = task
        self.notes = list(notes or [])  # why a component is off (shown nowhere else; for logs)
        self._margin_warmup: list[np.ndarray] = []

    # -- fitting ---------------------------------------------------------------------------

    @classmethod
    def fit(
        cls,
        reference: Frame,
        features: Sequence[FeatureSpec],
        spec: AdversarialSpec | None = None,
        task: str = "classification",
        estimator: Any = None,
    ) -> AdversarialMonitor:
        """Fit every enabled component on the reference rows (see the module docstring).

        ``estimator``: the model itself for the squeeze component (default: loaded from
        ``spec.squeeze.model`` when set — that runs code from the file).
        """
        spec = spec or AdversarialSpec()
        names = [f.name for f in features if f.kind == "numeric" and f.name in reference.numeric]
        notes: list[str] = []
        X = numeric_matrix(reference, names)
        std = Standardizer.fit(X) if names else None
        Z = std.transform(X) if std is not None else np.zeros((len(reference), 0))
        outlier = tracker = squeeze = None
        if not names:
            notes.append("no numeric features: outlier and extraction components off")
        if names and spec.outlier.enabled:
            o = spec.outlier
            outlier = OutlierDetector.fit(
                Z,
                rate=o.rate,
                holdout=o.holdout,
                method=o.method,
                engine=o.engine,
                min_eigenvalue=o.min_eigenvalue,
                n_estimators=o.n_estimators,
                seed=spec.seed,
                test=spec.test,
            )
        if names and spec.extraction.enabled:
            e = spec.extraction
            kw = dict(buffer=e.buffer, distances=e.distances, min_queries=e.min_queries, test_every=e.test_every)
            if Z.shape[0] < e.min_queries + 2:
                notes.append(f"extraction off: the reference has {Z.shape[0]} rows, fewer than min_queries + 2")
            else:
                cal = calibrate(
                    Z, fpr=e.fpr, simulations=e.simulations, focus=e.focus, horizon=e.horizon, seed=spec.seed, **kw
                )
                tracker = ExtractionTracker(
                    Z.shape[1], max_sources=e.max_sources, idle_seconds=e.idle_seconds, calibration=cal, **kw
                )
        if task == "classification" and spec.squeeze.enabled:
            if estimator is None:
                from detectors.adversarial.squeeze import load_estimator

                if spec.squeeze.model is None:
                    raise ValueError("adversarial.squeeze needs squeeze.model (a saved estimator) or an estimator")
                estimator = load_estimator(spec.squeeze.model)
            s = spec.squeeze
            squeeze = SqueezeDetector.fit(
                estimator, names, X, bins=s.bins, rate=s.rate, sample=s.sample, test=spec.test, seed=spec.seed
            )
        mon = cls(spec, names, std, outlier, None, squeeze, tracker, task, notes)
        if task == "classification" and spec.margin.enabled:
            m = frame_margins(reference)
            if (m is None or not np.isfinite(m).any()) and estimator is not None and names:
                m = _estimator_margins(estimator, X, names)
            if m is not None and np.isfinite(m).sum() >= 20:
                mon.margin = MarginDetector.fit(m, spec.margin.rate, spec.test)
            else:
                mon.notes.append(
                    f"margin: the reference has no probabilities; calibrating on the first "
                    f"{spec.margin.warmup_events} predictions seen"
                )
        return mon

    @property
    def calibration(self) -> ExtractionCalibration | None:
        return self.tracker.calibration if self.tracker is not None else None

    def _warm_margin(self, m: np.ndarray) -> None:
        m = m[np.isfinite(m)]
        if m.size:
            self._margin_warmup.append(m)
        have = sum(a.size for a in self._margin_warmup)
        if have >= self.spec.margin.warmup_events:
            ref = np.concatenate(self._margin_warmup)[: self.spec.margin.warmup_events]
            self.margin = MarginDetector.fit(ref, self.spec.margin.rate, self.spec.test)
            self._margin_warmup = []

    # -- a window -----------------------------------------------------------------------------

    def evaluate(self, frame: Frame) -> AdversarialResult:
        """Score one window (and advance the per-source extraction state).

        The combined score takes the *source contrasts* (does one client's low-margin or
        off-manifold rate stand out from the rest of the window?) and the extraction test:
        population rates against the reference go to ``res.population`` — they rise with any
        data drift — and into the score only with ``score_population: true``.
        """
        n = len(frame)
        comps: dict[str, ComponentResult | ContrastResult] = {}
        pop: dict[str, ComponentResult] = {}
        X = numeric_matrix(frame, self.names)
        Z = self.standardizer.transform(X) if self.standardizer is not None else None
        res = AdversarialResult(
            n_events=n,
            components=comps,
            p_value=1.0,
            score=0.0,
            flagged=False,
            alpha=self.spec.alpha,
            notes=list(self.notes),
            population=pop,
        )
        src = frame.source_id
        con = self.spec.contrast
        groups: list[TextGroups] = []  # the window's rows grouped by source: one sort, for every test below

        def by_source() -> TextGroups:
            if not groups:
                groups.append(frame.text_groups(np.asarray(src, dtype=object)))
            return groups[0]

        def contrast(name: str, rows: np.ndarray | None, exceed: np.ndarray) -> None:
            if con.enabled and src is not None:
                g = by_source() if rows is None else by_source().take(rows)
                c = source_contrast(
                    f"{name}_source",
                    src if rows is None else src[rows],
                    exceed,
                    min_events=con.min_events,
                    min_excess=con.min_excess,
                    groups=g,
                )
                if c.n_tested:
                    comps[c.name] = c

        if self.outlier is not None and Z is not None and n:  # fitted together with the standardizer
            exceed = self.outlier.exceedances(Z)
            pop["outlier"] = self.outlier.result(exceed)
            contrast("outlier", None, exceed)
        if self.task == "classification" and self.spec.margin.enabled:
            m = frame_margins(frame)
            if m is not None:
                if self.margin is not None:
                    ok = np.isfinite(m)
                    exceed = self.margin.exceedances(m[ok])
                    c = self.margin.result(exceed)
                    if c.n:
                        pop["low_margin"] = c
                        contrast("low_margin", ok, exceed)
                else:
                    self._warm_margin(m)
        if self.squeeze is not None and n:
            c, res.squeeze_mean = self.squeeze.evaluate(X)
            if c.n:
                pop["squeeze"] = c
        if self.tracker is not None and Z is not None and n:  # fitted together with the standardizer
            cal = self.tracker.calibration
            assert cal is not None, "fit() builds the monitor's tracker with its calibration"
            upd = self.tracker.update(src, Z, frame.event_time, groups=by_source())
            res.sources = upd
            res.sources_tracked = self.tracker.n_sources
            res.sources_evicted = self.tracker.evicted
            res.sources_expired = self.tracker.expired
            res.delta = cal.delta
            if len(upd):
                tested = ~np.isnan(upd.w)
                k = int(upd.flagged.sum())
                m_t = int(tested.sum())
                res.extraction_flagged = k
                res.extraction_share = float(upd.n_batch[upd.flagged].sum() / max(1, upd.n_batch.sum()))
                if m_t:
                    fpr = cal.fpr
                    p = float(stats.binom.sf(k - 1, m_t, fpr)) if k else 1.0
                    comps["extraction"] = ComponentResult("extraction", m_t, k, fpr, p)
        scored: dict[str, ComponentResult | ContrastResult] = dict(comps)
        if self.spec.score_population:
            scored.update(pop)
            res.components = comps = scored
        ps = {k: c.p_value for k, c in scored.items() if np.isfinite(c.p_value)}
        res.p_value = bonferroni_min(list(ps.values()))
        res.score = 1.0 - res.p_value
        res.flagged = bool(res.p_value < self.spec.alpha)
        if ps:
            res.top_component = min(ps, key=ps.__getitem__)
            if res.flagged:  # the components that flag on their own share of alpha (Bonferroni)
                res.flagged_by = sorted((k for k, p in ps.items() if len(ps) * p < self.spec.alpha), key=ps.__getitem__)
        return res

    # -- records --------------------------------------------------------------------------------

    def records(self, res: AdversarialResult, tags: dict[str, str], time_ns: int) -> list[Record]:
        """``ADVERSARIAL`` for the window and ``SOURCE`` for its top-K sources (non-finite fields dropped).

        Population components (``<name>_rate``, ``_ref_rate``, ``_change``, ``_p_value``) say whether
        the inputs moved; source contrasts (``<name>_source_p_value``, ``_rate``, ``_rest_rate``,
        ``_excess``, ``_suspect``) and ``extraction_*`` say whether someone is probing; ``flagged_by``
        names the components that raised the flag (``top_component``: the one closest to it).
        """
        f: dict[str, Any] = {
            "score": res.score,
            "p_value": res.p_value,
            "threshold": 1.0 - res.alpha,
            "flagged": res.flagged,
            "n_events": res.n_events,
            "n_components": len(res.components),
            "score_population": bool(self.spec.score_population),
        }
        if res.top_component is not None:
            f["top_component"] = res.top_component
        if res.flagged_by:
            f["flagged_by"] = ",".join(res.flagged_by)
        for name, pc in res.population.items():
            f[f"{name}_rate"] = pc.rate
            f[f"{name}_ref_rate"] = pc.ref_rate
            f[f"{name}_change"] = pc.change
            f[f"{name}_p_value"] = pc.p_value
        for name, c in res.components.items():
            if isinstance(c, ContrastResult):
                f[f"{name}_p_value"] = c.p_value
                f[f"{name}_tested"] = c.n_tested
                if c.source is not None:
                    f[f"{name}_rate"] = c.rate
                    f[f"{name}_rest_rate"] = c.rest_rate
                    f[f"{name}_excess"] = c.excess
                    f[f"{name}_suspect"] = safe_label(c.source)
            elif name == "extraction":
                f["extraction_p_value"] = c.p_value
                f["extraction_flagged"] = res.extraction_flagged
                f["extraction_share"] = res.extraction_share
                f["sources_tested"] = c.n
        if "squeeze" in res.population:
            f["squeeze_mean"] = res.squeeze_mean
        if res.sources is not None:
            f["sources_active"] = len(res.sources)
            f["sources_tracked"] = res.sources_tracked
            f["sources_evicted"] = res.sources_evicted
            f["sources_expired"] = res.sources_expired
        out = [Record(R.ADVERSARIAL, dict(tags), _finite(f), time_ns)]
        u = res.sources
        k = self.spec.extraction.top_k
        if u is not None and len(u) and k:
            suspects = res.suspects
            contrasts = [c for c in res.components.values() if isinstance(c, ContrastResult)]
            flag = np.array([str(s) in suspects for s in u.source.tolist()], dtype=bool)
            score = np.nan_to_num(u.score, nan=-1.0)
            order = np.lexsort((-u.n_batch, -score, ~u.flagged, ~flag))[:k]
            for i in order.tolist():
                name = str(u.source[i])
                sf: dict[str, Any] = {
                    "flag": bool(flag[i]),
                    "extraction_flag": bool(u.flagged[i]),
                    "score": float(u.score[i]),
                    "shapiro_w": float(u.w[i]),
                    "threshold": res.delta,
                    "n_queries": int(u.n_queries[i]),
                    "n_window": int(u.n_batch[i]),
                }
                if flag[i]:
                    sf["flagged_by"] = suspects[name]
                for cr in contrasts:
                    if name in cr.per_source:
                        rate, rest, p = cr.per_source[name]
                        sf[f"{cr.name}_rate"], sf[f"{cr.name}_rest_rate"], sf[f"{cr.name}_p_value"] = rate, rest, p
                if u.first_flag[i] >= 0:
                    sf["first_flag_queries"] = int(u.first_flag[i])
                stags = {**tags, R.T_SOURCE: safe_label(name)}
                out.append(Record(R.SOURCE, stags, _finite(sf), time_ns))
        return out


def _finite(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None and not (isinstance(v, float) and not math.isfinite(v))}


def _estimator_margins(estimator: Any, X: np.ndarray, names: list[str]) -> np.ndarray | None:
    from detectors.adversarial.margin import margins
    from detectors.adversarial.squeeze import _model_input

    ok = np.isfinite(X).all(axis=1)
    if not ok.any():
        return None
    p = np.asarray(estimator.predict_proba(_model_input(X[ok], names, estimator)))
    return margins(p) if p.ndim == 2 and p.shape[1] >= 2 else None
