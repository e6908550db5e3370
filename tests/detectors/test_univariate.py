"""Univariate drift: statistics against scipy, engines against each other, calibration, power."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.special as sc
from scipy import stats
from scipy.spatial.distance import jensenshannon

from detectors.frame import Frame
from detectors.reference import Reference
from detectors.spec import DriftSpec, FeatureSpec
from detectors.twosample import (
    PSI_EPS,
    binned_effects,
    chi2_2xk,
    cvm_pvalue,
    ks_pvalue,
    kstwo_sf,
    numeric_block,
    smirnov_sf,
)
from detectors.univariate import univariate_drift
from tests.detectors.drift_data import feature_specs, make_frame


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20240601)


# -- null distributions -------------------------------------------------------------------


@pytest.mark.parametrize("n", [3, 40, 140, 141, 333, 2500, 12000])
def test_kstwo_sf_matches_scipy_over_the_whole_range(n):
    rng = np.random.default_rng(n)
    d = np.concatenate([np.linspace(0, 1, 51), rng.uniform(0, 4 / np.sqrt(n), 50).clip(0, 1)])
    np.testing.assert_allclose(kstwo_sf(d, n), stats.kstwo.sf(d, n), rtol=1e-9, atol=1e-300)


def test_smirnov_sf_matches_scipy_smirnov():
    rng = np.random.default_rng(1)
    for n in (141, 1000, 4000):
        x = np.sqrt(rng.uniform(2.2, 300, 20) / n).clip(0, 0.99)
        np.testing.assert_allclose(smirnov_sf(np.full(20, n), x), sc.smirnov(n, x), rtol=1e-10)


@pytest.mark.parametrize("sizes", [(30, 25), (200, 1000), (4750, 4760), (5000, 150)])
def test_ks_pvalue_is_ks_2samp_asymptotic(sizes):
    rng = np.random.default_rng(sum(sizes))
    for shift in (0.0, 0.1, 0.3):
        a, b = rng.normal(size=sizes[0]), rng.normal(shift, size=sizes[1])
        res = stats.ks_2samp(a, b, method="asymp")
        assert ks_pvalue(res.statistic, *sizes) == pytest.approx(res.pvalue, rel=1e-9, abs=1e-300)


@pytest.mark.parametrize("sizes", [(30, 25), (200, 1000), (3000, 2900)])
def test_cvm_pvalue_is_cramervonmises_2samp_asymptotic(sizes):
    rng = np.random.default_rng(sum(sizes))
    for shift in (0.0, 0.05, 0.2, 1.0):
        a, b = rng.normal(size=sizes[0]), rng.normal(shift, size=sizes[1])
        res = stats.cramervonmises_2samp(a, b, method="asymptotic")
        assert cvm_pvalue(res.statistic, *sizes) == pytest.approx(res.pvalue, rel=1e-9, abs=1e-300)


# -- statistics of the merged samples ---------------------------------------------------------


def _samples(rng):
    """Pairs of sorted samples: continuous, heavy ties, ties across samples, tiny, skewed."""
    return [
        (rng.normal(size=1000), rng.normal(0.1, 1.2, size=900)),
        (np.round(rng.normal(size=800), 1), np.round(rng.normal(0.05, size=700), 1)),
        (rng.integers(0, 5, 300).astype(float), rng.integers(0, 6, 250).astype(float)),
        (rng.exponential(size=15), rng.exponential(2.0, size=12)),
        (rng.lognormal(3, 1, size=2000), rng.lognormal(3.1, 1, size=50)),
    ]


def test_block_statistics_match_scipy(rng):
    pairs = [(np.sort(a), np.sort(b)) for a, b in _samples(rng)]
    refs, curs = [p[0] for p in pairs], [p[1] for p in pairs]
    edges = [np.unique(np.quantile(r, np.arange(1, 10) / 10)) for r in refs]
    blk = numeric_block(refs, curs, edges, [f"f{i}" for i in range(len(refs))], cvm=True)
    for i, (r, c) in enumerate(pairs):
        assert blk.ks[i] == pytest.approx(stats.ks_2samp(r, c).statistic, abs=1e-15)
        assert blk.cvm[i] == pytest.approx(stats.cramervonmises_2samp(r, c, method="asymptotic").statistic, rel=1e-10)
        assert blk.wasserstein[i] == pytest.approx(stats.wasserstein_distance(r, c), rel=1e-10)
        # bins and effect sizes, independently
        ref_counts = np.histogram(r, bins=np.concatenate(([-np.inf], edges[i], [np.inf])))[0]
        idx = np.searchsorted(edges[i], c, side="right")
        cur_counts = np.bincount(idx, minlength=edges[i].shape[0] + 1)
        np.testing.assert_array_equal(blk.bin_counts[i], cur_counts)
        p, q = ref_counts / ref_counts.sum(), cur_counts / cur_counts.sum()
        assert blk.js[i] == pytest.approx(jensenshannon(p, q, base=2), rel=1e-9, abs=1e-12)
        pe, qe = np.maximum(p, PSI_EPS), np.maximum(q, PSI_EPS)
        assert blk.psi[i] == pytest.approx(np.sum((qe - pe) * np.log(qe / pe)), rel=1e-12)


def test_chi2_2xk_matches_chi2_contingency(rng):
    tables = [
        (rng.integers(1, 500, 12), rng.integers(0, 400, 12)),  # many categories
        (np.array([300, 200]), np.array([120, 90])),  # K = 2: Yates
        (np.array([70]), np.array([30])),  # one category: dof 0
        (np.array([50, 0, 10]), np.array([40, 7, 0])),  # categories seen on one side only
    ]
    a = np.concatenate([t[0] for t in tables])
    b = np.concatenate([t[1] for t in tables])
    starts = np.cumsum([0] + [t[0].shape[0] for t in tables[:-1]])
    stat, p, dof = chi2_2xk(a, b, starts)
    for i, (ta, tb) in enumerate(tables):
        exp = stats.chi2_contingency(np.vstack([ta, tb]))
        assert stat[i] == pytest.approx(exp.statistic, rel=1e-12, abs=1e-12)
        assert p[i] == pytest.approx(exp.pvalue, rel=1e-10)
        assert dof[i] == exp.dof
    _psi, js = binned_effects(a, b, starts)
    for i, (ta, tb) in enumerate(tables):
        assert js[i] == pytest.approx(jensenshannon(ta / ta.sum(), tb / tb.sum(), base=2), abs=1e-12)


# -- the drift API --------------------------------------------------------------------------


def _frame(numeric=None, categorical=None):
    n = len(next(iter({**(numeric or {}), **(categorical or {})}.values())))
    return Frame.from_columns(
        event_id=np.arange(n).astype(str), event_time=np.zeros(n), numeric=numeric, categorical=categorical
    )


def test_missing_values_are_excluded_from_the_tests(rng):
    specs = (FeatureSpec(name="x", kind="numeric"), FeatureSpec(name="c", kind="categorical"))
    xr, xc = rng.normal(size=600), rng.normal(0.2, size=500)
    cr = np.array(["a", "b", "c"], dtype=object)[rng.integers(0, 3, 600)]
    cc = np.array(["a", "b", "c"], dtype=object)[rng.integers(0, 3, 500)]
    ref = Reference.from_frame(_frame({"x": xr}, {"c": cr}), specs)
    xm, cm = xc.copy(), cc.copy()
    holes = rng.random(500) < 0.2
    xm[holes], cm[holes] = np.nan, None
    res = univariate_drift(_frame({"x": xm}, {"c": cm}), ref, DriftSpec())
    x, c = res.feature("x"), res.feature("c")
    exp = stats.ks_2samp(xr, xc[~holes], method="asymp")
    assert (x.n_ref, x.n_cur) == (600, int((~holes).sum()))
    assert x.statistic == pytest.approx(exp.statistic) and x.p_value == pytest.approx(exp.pvalue)
    table = np.vstack([[np.sum(cr == v) for v in "abc"], [np.sum(cc[~holes] == v) for v in "abc"]])
    assert c.statistic == pytest.approx(stats.chi2_contingency(table).statistic)
    assert c.n_cur == int((~holes).sum())


def test_infinite_values_are_treated_as_missing(rng):
    specs = (FeatureSpec(name="x", kind="numeric"),)
    xr, xc = rng.normal(size=300), rng.normal(0.3, size=200)
    ref = Reference.from_frame(_frame({"x": np.append(xr, [np.inf, -np.inf])}), specs)
    assert ref.numeric["x"].n == 300 and np.isfinite(ref.numeric["x"].edges).all()
    res = univariate_drift(_frame({"x": np.append(xc, [np.inf, np.nan])}), ref, DriftSpec())
    x = res.feature("x")
    assert x.n_cur == 200 and x.wasserstein == pytest.approx(stats.wasserstein_distance(xr, xc))
    assert x.statistic == pytest.approx(stats.ks_2samp(xr, xc).statistic)


def test_unseen_categories_enter_the_table(rng):
    specs = (FeatureSpec(name="c", kind="categorical"),)
    ref = Reference.from_frame(_frame(categorical={"c": np.array(["a", "b"] * 100, dtype=object)}), specs)
    cur = np.array(["a", "b", "zzz", "a"] * 25, dtype=object)
    res = univariate_drift(_frame(categorical={"c": cur}), ref, DriftSpec())
    exp = stats.chi2_contingency(np.array([[100, 100, 0], [50, 25, 25]]))
    assert res.feature("c").statistic == pytest.approx(exp.statistic)
    assert res.feature("c").drift


def test_too_few_values_are_skipped_not_tested(rng):
    specs = (FeatureSpec(name="x", kind="numeric"), FeatureSpec(name="y", kind="numeric"))
    ref = Reference.from_frame(_frame({"x": rng.normal(size=100), "y": rng.normal(size=100)}), specs)
    y = np.full(100, np.nan)
    y[:5] = 1.0
    res = univariate_drift(_frame({"x": rng.normal(size=100), "y": y}), ref, DriftSpec())
    assert res.skipped == ("y",) and res.n_features == 1
    assert [f.feature for f in res.features] == ["x"]


def test_correction_and_ranking(rng):
    specs = feature_specs(6, 2)
    ref = Reference.from_frame(make_frame(rng, 2000, n_numeric=6, n_categorical=2), specs)
    cur = make_frame(rng, 1000, n_numeric=6, n_categorical=2, shift={"x1": 0.6, "x4": 0.2})
    res = univariate_drift(cur, ref, DriftSpec(correction="bonferroni", p_val=0.05))
    assert res.threshold == pytest.approx(0.05 / 8)
    assert all(f.threshold == res.threshold for f in res.features)
    assert all(f.drift == (f.p_value < res.threshold) for f in res.features)
    assert [f.rank for f in res.features] == list(range(1, 9))
    assert res.features[0].feature == "x1"  # the biggest shift contributes most
    drifted = [f for f in res.features if f.drift]
    assert res.n_drifted == len(drifted) and res.share_drifted == len(drifted) / 8
    assert all(f.rank <= len(drifted) for f in drifted)  # drifting features rank first
    fdr = univariate_drift(cur, ref, DriftSpec(correction="fdr", p_val=0.05))
    assert fdr.n_drifted >= res.n_drifted  # BH is never more conservative than Bonferroni


def test_cvm_uses_exact_distribution_for_tiny_samples(rng):
    specs = (FeatureSpec(name="x", kind="numeric"),)
    xr, xc = rng.normal(size=15), rng.normal(1.0, size=12)
    ref = Reference.from_frame(_frame({"x": xr}), specs)
    res = univariate_drift(_frame({"x": xc}), ref, DriftSpec(numeric_test="cvm"))
    exp = stats.cramervonmises_2samp(xr, xc, method="exact")
    assert res.feature("x").statistic == pytest.approx(exp.statistic)
    assert res.feature("x").p_value == pytest.approx(exp.pvalue)


# -- engines agree ------------------------------------------------------------------------------


def _tricky_windows(rng):
    """Reference + windows with missing values, ties, unseen and two-level categories."""
    specs = (
        FeatureSpec(name="a", kind="numeric"),
        FeatureSpec(name="b", kind="numeric"),
        FeatureSpec(name="tiny", kind="numeric"),
        FeatureSpec(name="k", kind="categorical"),
        FeatureSpec(name="two", kind="categorical"),
        FeatureSpec(name="one", kind="categorical"),
    )

    def frame(n, shift, tiny_n=12):
        a = rng.normal(shift, 1, n)
        a[rng.random(n) < 0.1] = np.nan
        b = np.round(rng.normal(0, 1, n), 1)  # heavy ties
        tiny = np.full(n, np.nan)
        tiny[:tiny_n] = rng.normal(shift, 1, tiny_n)
        labels = np.array(["u", "v", "w", "x"] + (["new"] if shift else []), dtype=object)
        k = labels[rng.integers(0, labels.shape[0], n)]
        k[rng.random(n) < 0.05] = None
        two = np.array(["yes", "no"], dtype=object)[(rng.random(n) < 0.3 + shift / 4).astype(int)]
        one = np.full(n, "only", dtype=object)
        return _frame({"a": a, "b": b, "tiny": tiny}, {"k": k, "two": two, "one": one})

    ref = Reference.from_frame(frame(800, 0.0, tiny_n=16), specs)
    return ref, [frame(500, 0.0), frame(500, 0.3), frame(300, 0.0)]


@pytest.mark.parametrize("numeric_test", ["ks", "cvm"])
@pytest.mark.parametrize("correction", ["bonferroni", "fdr"])
def test_native_and_alibi_engines_agree(numeric_test, correction):
    rng = np.random.default_rng(7)
    ref, windows = _tricky_windows(rng)
    verdicts = set()
    for w in windows:
        spec = DriftSpec(numeric_test=numeric_test, correction=correction)
        nat = univariate_drift(w, ref, spec)
        ali = univariate_drift(w, ref, spec.model_copy(update={"engine": "alibi"}))
        assert ali.engine == "alibi" and nat.engine == "native"
        assert [f.feature for f in nat.features] == [f.feature for f in ali.features]
        for fn, fa in zip(nat.features, ali.features):
            # alibi-detect returns float32: agreement to float32 precision
            assert fn.statistic == pytest.approx(fa.statistic, rel=2e-6, abs=1e-6), fn.feature
            assert fn.p_value == pytest.approx(fa.p_value, rel=2e-5, abs=1e-37), fn.feature
            assert (fn.drift, fn.n_ref, fn.n_cur) == (fa.drift, fa.n_ref, fa.n_cur)
        assert (nat.drift, nat.n_drifted, nat.threshold) == (ali.drift, ali.n_drifted, ali.threshold)
        verdicts.add(nat.drift)
    assert verdicts == {True, False}  # both kinds of verdict were exercised


def test_window_verdict_matches_alibi_tabular_drift():
    """Without missing values, one TabularDrift (alibi's batch verdict) agrees with ours."""
    from alibi_detect.cd import TabularDrift

    rng = np.random.default_rng(11)
    specs = feature_specs(4, 2)
    ref_frame = make_frame(rng, 1500, n_numeric=4, n_categorical=2)
    ref = Reference.from_frame(ref_frame, specs)

    def matrix(frame):
        cols = [frame.numeric[f"x{i}"] for i in range(4)]
        cats = list(ref.categorical["c0"].categories)
        cols += [np.array([cats.index(v) for v in frame.categorical[f"c{i}"]], dtype=float) for i in range(2)]
        return np.column_stack(cols)

    for correction in ("bonferroni", "fdr"):
        det = TabularDrift(
            matrix(ref_frame), p_val=0.05, correction=correction, categories_per_feature={4: None, 5: None}
        )
        for shift in (0.0, 0.15, 0.5):
            w = make_frame(rng, 700, n_numeric=4, n_categorical=2, shift={"x2": shift})
            ours = univariate_drift(w, ref, DriftSpec(correction=correction))
            theirs = det.predict(matrix(w), drift_type="batch")["data"]
            assert ours.drift == bool(theirs["is_drift"])
            if ours.drift:
                assert ours.threshold == pytest.approx(float(theirs["threshold"]))


# -- calibration and power -------------------------------------------------------------------


@pytest.mark.parametrize("correction", ["bonferroni", "fdr"])
def test_stationary_stream_false_alarm_rate_is_at_most_the_level(correction):
    """Windows from the reference's distribution: flagged windows <= p_val (+50 % tolerance).

    10 independent references x 30 windows of 500 events, 20 features (15 numeric,
    5 categorical): 300 windows. Several references, because all windows compared
    with one reference share its sampling error.
    """
    rng = np.random.default_rng({"bonferroni": 1, "fdr": 2}[correction])
    specs = feature_specs()
    spec = DriftSpec(p_val=0.05, correction=correction)
    flagged, windows, p_values = 0, 0, []
    for _ in range(10):
        ref = Reference.from_frame(make_frame(rng, 1000), specs)
        for _ in range(30):
            res = univariate_drift(make_frame(rng, 500), ref, spec)
            flagged += res.drift
            windows += 1
            p_values += [f.p_value for f in res.features]
    rate = flagged / windows
    assert rate <= 0.05 * 1.5, f"{correction}: {flagged}/{windows} stationary windows flagged"
    # and the per-feature p-values are calibrated: uncorrected rejections at 5 % ~ 5 %
    per_feature = np.mean(np.array(p_values) < 0.05)
    assert 0.035 <= per_feature <= 0.065, per_feature


def test_half_sd_shift_in_one_of_twenty_features_is_detected_in_the_first_window():
    rng = np.random.default_rng(3)
    specs = feature_specs()
    for rep in range(20):
        ref = Reference.from_frame(make_frame(rng, 1000), specs)
        target = f"x{rep % 15}"
        res = univariate_drift(make_frame(rng, 1000, shift={target: 0.5}), ref, DriftSpec())
        assert res.drift, f"repetition {rep}: shift in {target} missed"
        top = res.features[0]
        assert (top.feature, top.drift, top.rank) == (target, True, 1)
