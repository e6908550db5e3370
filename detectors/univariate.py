"""Univariate data drift: one two-sample test per feature, corrected for many features.

Per feature, the window's non-missing values are compared with the reference's:

* numeric — Kolmogorov–Smirnov (``ks``, default) or Cramér–von Mises (``cvm``);
* categorical — Pearson's chi-square on the 2 × K table of counts over the union
  of categories seen in the reference and the window (Yates' continuity
  correction when K = 2, as ``scipy.stats.chi2_contingency``).

Beside each p-value, effect sizes that do not grow with the sample size:

* ``psi`` — population stability index over the reference-quantile bins
  (numeric) or the categories (categorical); proportions are floored at
  :data:`~detectors.twosample.PSI_EPS` so empty bins stay finite;
* ``js`` — Jensen–Shannon **distance**, base 2, in [0, 1], over the same bins
  (``scipy.spatial.distance.jensenshannon(p, q, base=2)``);
* ``wasserstein`` — the 1-Wasserstein (earth mover's) distance of the raw
  values, numeric only, in the feature's own units
  (``scipy.stats.wasserstein_distance``).

Missing values (NaN / None, and numeric +-inf) are left out of the tests; data
quality counts them. A feature is tested only when both samples have at least
``min_samples`` values; the others are listed in ``DriftResult.skipped``.

The p-values are corrected for the number of features tested
(:mod:`detectors.correction`); each feature's verdict is ``p < threshold``
with the corrected threshold, and the window drifts when any feature does
(alibi-detect's batch verdict). Features are ranked by contribution: drifting
features first, then by PSI (comparable across kinds), then by p-value.

Two engines compute the test statistics and p-values (effect sizes are always
computed natively):

* ``native`` (default) — numpy/scipy, vectorised over all features of a
  window: the window's numeric columns are sorted in one call, merged into the
  reference's pre-sorted columns (one ``searchsorted`` per feature, no per-event
  Python), and KS D, CvM T and Wasserstein come from one pass over the merged
  arrays; p-values are vectorised replicas of the distributions scipy uses
  (``kstwo`` at ``round(n·m/(n+m))`` as ``ks_2samp(method='asymp')``, the
  Csörgő–Faraway asymptotic CvM distribution as ``cramervonmises_2samp``);
* ``alibi`` — alibi-detect's ``KSDrift`` / ``CVMDrift`` / ``ChiSquareDrift``
  (imported lazily, ~5 s). alibi-detect is under the Business Source License
  1.1: production use needs a licence from Seldon, hence the native default.

Both follow alibi's conventions (KS asymptotic, CvM ``method='auto'``: exact
when both samples have at most 20 values), so they agree to float32 precision
(alibi returns float32) and make the same verdicts.

>>> import numpy as np
>>> from detectors.frame import Frame
>>> from detectors.reference import Reference
>>> from detectors.spec import DriftSpec, FeatureSpec
>>> rng = np.random.default_rng(1)
>>> feats = [FeatureSpec(name="x", kind="numeric"), FeatureSpec(name="y", kind="numeric")]
>>> def frame(shift):
...     return Frame.from_columns(event_id=np.arange(500).astype(str), event_time=np.zeros(500),
...         numeric={"x": rng.normal(shift, 1, 500), "y": rng.normal(0, 1, 500)})
>>> ref = Reference.from_frame(frame(0.0), feats)
>>> res = univariate_drift(frame(1.0), ref, DriftSpec())
>>> res.drift, res.features[0].feature, res.features[0].drift, res.n_drifted
(True, 'x', True, 1)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from detectors.correction import correct
from detectors.frame import Frame
from detectors.reference import Reference, WindowColumns, attach_reference_frame
from detectors.spec import DriftSpec, FeatureSpec
from detectors.thresholds import METHODS, FeatureVerdict, drift_verdicts
from detectors.twosample import (
    CategoricalBlock,
    NumericBlock,
    categorical_block,
    cvm_pvalue,
    ks_pvalue,
    numeric_block,
)

MIN_SAMPLES = 10
"""Default minimum of non-missing values on each side for a feature to be tested."""


# ---------------------------------------------------------------------------------------
# Engines: (statistic, p_value) per feature
# ---------------------------------------------------------------------------------------

EngineFn = Callable[
    [NumericBlock, CategoricalBlock, str, Reference], tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
]


def native_engine(num: NumericBlock, cat: CategoricalBlock, numeric_test: str, reference: Reference):
    """Statistics and p-values from the native blocks (no extra work for KS/chi-square)."""
    if numeric_test == "ks":
        stat, p = num.ks, ks_pvalue(num.ks, num.n_ref, num.n_cur)
    else:
        if num.cvm is None:
            raise ValueError("numeric_test 'cvm' needs a NumericBlock built with cvm=True")
        stat, p = num.cvm, cvm_pvalue(num.cvm, num.n_ref, num.n_cur)
        small = np.nonzero(np.maximum(num.n_ref, num.n_cur) <= 20)[0]
        if small.size:  # alibi/scipy 'auto': exact distribution for tiny samples
            p = p.copy()
            for i in small:
                p[i] = stats.cramervonmises_2samp(num.ref[i], num.cur[i], method="exact").pvalue
    return stat, p, cat.chi2, cat.p_value


def alibi_engine(num: NumericBlock, cat: CategoricalBlock, numeric_test: str, reference: Reference):
    """Statistics and p-values from alibi-detect's detectors (lazy import, BSL 1.1).

    One single-feature detector per feature, built once per reference and cached
    on it, so each feature keeps its own missing-value-free sample.
    """
    import warnings

    from alibi_detect.cd import ChiSquareDrift, CVMDrift, KSDrift  # ~5 s the first time

    cache = reference._cache
    num_stat, num_p = np.empty(len(num.names)), np.empty(len(num.names))
    for i, name in enumerate(num.names):
        key = ("alibi", numeric_test, name)
        if key not in cache:
            cls = KSDrift if numeric_test == "ks" else CVMDrift
            cache[key] = cls(num.ref[i][:, None], p_val=0.05)
        p, s = cache[key].score(num.cur[i][:, None])
        num_p[i], num_stat[i] = float(p[0]), float(s[0])
    cat_stat, cat_p = np.empty(len(cat.names)), np.empty(len(cat.names))
    for i, name in enumerate(cat.names):
        key = ("alibi", "chi2", name)
        if key not in cache:
            counts = reference.categorical[name].counts
            x_ref = np.repeat(np.arange(counts.shape[0]), counts)[:, None]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                cache[key] = ChiSquareDrift(x_ref, p_val=0.05)
        p, s = cache[key].score(cat.cur_codes[i][:, None])
        cat_p[i], cat_stat[i] = float(p[0]), float(s[0])
    return num_stat, num_p, cat_stat, cat_p


ENGINES: dict[str, EngineFn] = {"native": native_engine, "alibi": alibi_engine}


# ---------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureDrift:
    """Drift test of one feature in one window."""

    feature: str
    kind: str  # "numeric" | "categorical"
    test: str  # "ks" | "cvm" | "chi2"
    statistic: float
    p_value: float
    n_ref: int
    n_cur: int
    psi: float
    js: float
    wasserstein: float | None  # numeric only
    threshold: float = float("nan")  # corrected threshold (reject where p < threshold)
    drift: bool = False
    rank: int = 0  # 1 = contributes most
    verdict: FeatureVerdict | None = None  # method, judged value and band (detectors.thresholds)


@dataclass(frozen=True)
class DriftResult:
    """All features of one window: per-feature results (ranked) and the window verdict."""

    features: tuple[FeatureDrift, ...]  # ordered by rank
    engine: str
    correction: str
    p_val: float  # configured family level
    threshold: float  # corrected per-feature threshold
    n_features: int  # features tested
    n_drifted: int
    drift: bool
    skipped: tuple[str, ...] = ()  # features with too few values on either side
    threshold_method: str = "p_value"  # configured DriftSpec.threshold.method

    @property
    def share_drifted(self) -> float:
        return self.n_drifted / self.n_features if self.n_features else 0.0

    def feature(self, name: str) -> FeatureDrift:
        return next(f for f in self.features if f.feature == name)


def univariate_drift(
    frame: Frame,
    reference: Reference,
    spec: DriftSpec,
    features: Sequence[str] | None = None,
    *,
    min_samples: int = MIN_SAMPLES,
    columns: WindowColumns | None = None,
) -> DriftResult:
    """Test every feature of ``frame`` against ``reference`` with the engine of ``spec``.

    ``features``: names to test (default: all features of the reference).
    ``columns``: the frame's prepared columns, when already computed (shared work).
    """
    if spec.engine not in ENGINES:
        raise ValueError(f"unknown drift engine {spec.engine!r}; expected one of {sorted(ENGINES)}")
    wanted = list(features) if features is not None else [f.name for f in reference.features]
    num_names = [f for f in wanted if f in reference.numeric]
    cat_names = [f for f in wanted if f in reference.categorical]
    unknown = [f for f in wanted if f not in reference.numeric and f not in reference.categorical]
    if unknown:
        raise KeyError(f"features not in the reference: {unknown}")

    min_samples = max(int(min_samples), 2)
    columns = columns if columns is not None else WindowColumns(frame)
    cur_sorted = columns.numeric(num_names)
    cur_cats = {n: columns.category_codes(n, reference.categorical[n]) for n in cat_names}
    testable = {
        n for i, n in enumerate(num_names) if min(reference.numeric[n].n, cur_sorted[i].shape[0]) >= min_samples
    }
    testable |= {n for n in cat_names if min(reference.categorical[n].n, cur_cats[n][0].shape[0]) >= min_samples}
    skipped = [n for n in wanted if n not in testable]
    keep = [i for i, n in enumerate(num_names) if n in testable]
    num_names = [num_names[i] for i in keep]
    cat_names = [n for n in cat_names if n in testable]
    nrefs = [reference.numeric[n] for n in num_names]
    num = numeric_block(
        [r.values for r in nrefs],
        [cur_sorted[i] for i in keep],
        [r.edges for r in nrefs],
        num_names,
        cvm=spec.numeric_test == "cvm",
        ref_bins=[r.counts for r in nrefs],
    )
    cat = categorical_block(reference, cur_cats, cat_names)

    num_stat, num_p, cat_stat, cat_p = ENGINES[spec.engine](num, cat, spec.numeric_test, reference)

    dof = np.concatenate(
        [
            np.full(len(num_names), np.nan),
            [float(np.count_nonzero(a + b) - 1) for a, b in zip(cat.ref_counts, cat.cur_counts)],
        ]
    )
    return drift_result(
        reference,
        spec,
        len(frame),
        num_names,
        cat_names,
        statistic=np.concatenate([num_stat, cat_stat]),
        p_value=np.concatenate([num_p, cat_p]),
        psi=np.concatenate([num.psi, cat.psi]),
        js=np.concatenate([num.js, cat.js]),
        wasserstein=num.wasserstein,
        n_ref=np.concatenate([num.n_ref, cat.n_ref]),
        n_cur=np.concatenate([num.n_cur, cat.n_cur]),
        dof=dof,
        skipped=skipped,
    )


def drift_result(
    reference: Reference,
    spec: DriftSpec,
    window_rows: int,
    num_names: Sequence[str],
    cat_names: Sequence[str],
    *,
    statistic: np.ndarray,
    p_value: np.ndarray,
    psi: np.ndarray,
    js: np.ndarray,
    wasserstein: np.ndarray,
    n_ref: np.ndarray,
    n_cur: np.ndarray,
    dof: np.ndarray,
    skipped: Sequence[str] = (),
    engine: str | None = None,
) -> DriftResult:
    """The window's :class:`DriftResult` from per-feature statistics (numeric features first).

    Shared by :func:`univariate_drift` (statistics on the window's rows) and
    :func:`detectors.summaries.summary_drift` (statistics from a window summary):
    the many-test correction, the threshold method's verdicts
    (:func:`detectors.thresholds.drift_verdicts`) and the ranking are the same.
    ``dof``: chi-square degrees of freedom (NaN for numeric features); ``engine``: the name
    recorded (default ``spec.engine``).
    """
    num_names, cat_names = list(num_names), list(cat_names)
    names = num_names + cat_names
    p = np.asarray(p_value, dtype=np.float64)
    stat = np.asarray(statistic, dtype=np.float64)
    corr = correct(p, spec.p_val, spec.correction)
    n_num = len(num_names)
    kinds = ["numeric"] * n_num + ["categorical"] * len(cat_names)
    wass = [float(w) for w in wasserstein] + [None] * len(cat_names)
    tests = [spec.numeric_test] * n_num + [spec.categorical_test] * len(cat_names)
    verdicts = drift_verdicts(
        reference,
        window_rows,
        names,
        kinds,
        tests,
        stat,
        p,
        js,
        wass,
        n_ref,
        n_cur,
        dof,
        corr.threshold,
        corr.reject,
        spec,
    )
    reject = np.array([v.drift for v in verdicts], dtype=bool)
    # rank: drifting first, then larger PSI, then smaller p-value, then name
    order = sorted(range(len(names)), key=lambda i: (not reject[i], -psi[i], p[i], names[i]))
    results = tuple(
        FeatureDrift(
            feature=names[i],
            kind=kinds[i],
            test=tests[i],
            statistic=float(stat[i]),
            p_value=float(p[i]),
            n_ref=int(n_ref[i]),
            n_cur=int(n_cur[i]),
            psi=float(psi[i]),
            js=float(js[i]),
            wasserstein=wass[i],
            threshold=corr.threshold,
            drift=bool(reject[i]),
            rank=r + 1,
            verdict=verdicts[i],
        )
        for r, i in enumerate(order)
    )
    return DriftResult(
        features=results,
        engine=spec.engine if engine is None else engine,
        correction=spec.correction,
        p_val=spec.p_val,
        threshold=corr.threshold,
        n_features=len(results),
        n_drifted=int(reject.sum()),
        drift=bool(reject.any()),
        skipped=tuple(skipped),
        threshold_method=spec.threshold.method,
    )


def judge_windows(
    reference: np.ndarray | Mapping[str, np.ndarray],
    windows: Sequence[np.ndarray | Mapping],
    method: str,
    *,
    kinds: Mapping[str, str] | None = None,
    spec: DriftSpec | None = None,
    **threshold,
) -> list:
    """Verdicts of ``windows`` against ``reference`` with threshold ``method``.

    ``reference`` and each window: a 2-D array (rows × features, time order,
    numeric; features named ``x0, x1, ...``) or a mapping name → column
    (categorical columns as object arrays, named in ``kinds``). ``spec``: the
    drift spec to start from (default ``DriftSpec()``); ``threshold`` overrides
    ``ThresholdSpec`` fields (``sd_multiplier=3``). Returns one
    :class:`~detectors.univariate.DriftResult` per window — the same code path as
    the worker (reference rows attached, bands cached across windows).
    """
    if method not in METHODS:
        raise ValueError(f"unknown threshold method {method!r}; expected one of {METHODS}")

    def columns(data) -> dict[str, np.ndarray]:
        if isinstance(data, Mapping):
            return {str(k): np.asarray(v) for k, v in data.items()}
        arr = np.asarray(data, dtype=np.float64)
        arr = arr.reshape(-1, 1) if arr.ndim == 1 else arr
        return {f"x{i}": arr[:, i] for i in range(arr.shape[1])}

    def frame(cols: dict[str, np.ndarray]) -> Frame:
        n = len(next(iter(cols.values())))
        num = {k: v.astype(np.float64) for k, v in cols.items() if kinds_.get(k, "numeric") == "numeric"}
        cat = {k: np.asarray(v, dtype=object) for k, v in cols.items() if kinds_.get(k) == "categorical"}
        return Frame.from_columns(
            event_id=np.arange(n).astype(str), event_time=np.arange(n, dtype=np.float64), numeric=num, categorical=cat
        )

    ref_cols = columns(reference)
    kinds_ = dict(kinds or {})
    feats = [FeatureSpec(name=k, kind=kinds_.get(k, "numeric")) for k in ref_cols]
    base = spec or DriftSpec()
    dspec = base.model_copy(update={"threshold": base.threshold.model_copy(update={"method": method, **threshold})})
    rows = frame(ref_cols)
    ref = attach_reference_frame(Reference.from_frame(rows, feats, bins=dspec.histogram_bins), rows)
    return [univariate_drift(frame(columns(w)), ref, dspec) for w in windows]
