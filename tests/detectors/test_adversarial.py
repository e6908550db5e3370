"""Adversarial detectors: statistics against scipy/sklearn/alibi-detect, the vectorised
per-source tracker against a naive loop, calibration, bounded state, records, evaluator."""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import itertools
import math
import time

import numpy as np
import pytest
from scipy import stats
from scipy.spatial.distance import mahalanobis

from detectors import records as R
from detectors.adversarial.evaluator import AdversarialEvaluator, AdversarialFitError
from detectors.adversarial.extraction import ExtractionTracker, calibrate, simulate_benign
from detectors.adversarial.margin import MarginDetector, frame_margins, margins
from detectors.adversarial.monitor import AdversarialMonitor
from detectors.adversarial.outlier import (
    EngineUnavailable,
    IForestScorer,
    MahalanobisScorer,
    OutlierDetector,
    make_scorer,
)
from detectors.adversarial.spec import AdversarialSpec, ExtractionSpec
from detectors.adversarial.squeeze import QuantileSqueezer, SqueezeDetector, SqueezeModelError, load_estimator
from detectors.adversarial.stats import Calibration, bonferroni_min, calibrate_upper, exceedance_pvalue, shapiro_w
from detectors.frame import Frame
from detectors.spec import FeatureSpec

SMALL = {"extraction": {"simulations": 80, "horizon": 300}}  # fast calibration for unit tests
COV = np.array([[1.0, 0.8, 0.2], [0.8, 1.0, 0.1], [0.2, 0.1, 1.0]])
FEATURES = [FeatureSpec(name=n, kind="numeric") for n in ("a", "b", "c")] + [
    FeatureSpec(name="colour", kind="categorical")
]


def frame(X: np.ndarray, sources=None, proba=None, t0: float = 0.0) -> Frame:
    n = X.shape[0]
    return Frame.from_columns(
        event_id=np.arange(n).astype(str).astype(object),
        event_time=t0 + np.arange(n, dtype=float),
        source_id=None if sources is None else np.asarray(sources, dtype=object),
        numeric={k: X[:, j] for j, k in enumerate("abc")},
        categorical={"colour": np.array(["red"] * n, dtype=object)},
        pred_proba=proba,
        classes=("x", "y", "z") if proba is not None else (),
    )


@pytest.mark.parametrize("module", ["stats", "extraction", "outlier", "margin", "squeeze", "monitor", "spec"])
def test_doctests(module: str) -> None:
    mod = importlib.import_module(f"detectors.adversarial.{module}")
    assert doctest.testmod(mod).failed == 0


# ----------------------------------------------------------------------------- statistics


def test_shapiro_w_matches_scipy() -> None:
    rng = np.random.default_rng(1)
    for n in [*range(3, 30), 50, 99, 256, 1000]:
        for draw in (rng.normal, rng.exponential, rng.uniform):
            x = draw(size=(5, n))
            expected = [stats.shapiro(r).statistic for r in x]
            np.testing.assert_allclose(shapiro_w(x), expected, atol=1e-7)
    assert shapiro_w(np.ones((2, 10))).tolist() == [0.0, 0.0]  # zero range: maximally non-normal


def test_binomial_pvalue_matches_binomtest() -> None:
    cal = calibrate_upper(np.arange(2000.0), rate=0.05)
    for k, n in [(1, 10), (25, 500), (40, 500), (0, 500), (500, 500)]:
        expected = stats.binomtest(k, n, cal.ref_rate, alternative="greater").pvalue if k else 1.0
        assert exceedance_pvalue(k, n, cal, "binomial") == pytest.approx(expected, rel=1e-9)


def test_beta_binomial_pvalue_and_its_calibration() -> None:
    cal = Calibration(threshold=1.0, n_cal=500, n_above=24)
    assert exceedance_pvalue(40, 500, cal) == pytest.approx(stats.betabinom.sf(39, 500, 25, 476))
    # exact for exchangeable data: benign windows' p-values are (conservatively) uniform
    rng = np.random.default_rng(2)
    ps = []
    for _ in range(400):
        ref = rng.normal(size=500)
        c = calibrate_upper(ref, 0.05)
        win = rng.normal(size=300)
        ps.append(exceedance_pvalue(int((win > c.threshold).sum()), 300, c))
    ps = np.array(ps)
    assert (ps < 0.05).mean() <= 0.05 + 2 * math.sqrt(0.05 * 0.95 / 400)
    assert (ps < 0.2).mean() <= 0.2 + 2 * math.sqrt(0.2 * 0.8 / 400)


def test_calibrate_upper_order_statistic_and_errors() -> None:
    cal = calibrate_upper(np.arange(100.0)[::-1], rate=0.1)
    assert cal.threshold == 90.0 and cal.n_above == 9 and cal.ref_rate == pytest.approx(10 / 101)
    with pytest.raises(ValueError, match="at least 2"):
        calibrate_upper(np.array([1.0]), 0.1)
    with pytest.raises(ValueError, match="rate"):
        calibrate_upper(np.arange(10.0), 1.5)
    with pytest.raises(ValueError, match="unknown rate test"):
        exceedance_pvalue(1, 10, cal, "z")
    assert bonferroni_min([0.01, 0.5, float("nan")]) == pytest.approx(0.02)
    assert bonferroni_min([]) == 1.0


# ----------------------------------------------------------------------------- outlier


def test_native_mahalanobis_equals_scipy() -> None:
    rng = np.random.default_rng(3)
    ref = rng.multivariate_normal([1, -1, 0], COV, 800)
    x = rng.multivariate_normal([0, 0, 0], COV * 3, 20)
    sc = MahalanobisScorer().fit(ref)
    vi = np.linalg.inv(np.cov(ref, rowvar=False))
    expected = [mahalanobis(r, ref.mean(axis=0), vi) ** 2 for r in x]
    np.testing.assert_allclose(sc.score(x), expected, rtol=1e-9)


def test_alibi_mahalanobis_engine() -> None:
    rng = np.random.default_rng(4)
    ref = rng.multivariate_normal([0, 0, 0], COV, 500)
    if importlib.util.find_spec("torch") is None:
        with pytest.raises(EngineUnavailable, match="PyTorch"):
            make_scorer("mahalanobis", "alibi")
    else:  # pragma: no cover - PyTorch is not part of the default install
        a = make_scorer("mahalanobis", "alibi").fit(ref)
        np.testing.assert_allclose(a.score(ref[:20]), MahalanobisScorer().fit(ref).score(ref[:20]), rtol=1e-4)


@pytest.mark.slow  # fits alibi-detect's IForest (~7 s)
def test_iforest_native_and_alibi_flag_the_same_events() -> None:
    rng = np.random.default_rng(5)
    ref = rng.normal(size=(600, 3))
    x = np.vstack([rng.normal(size=(50, 3)), rng.normal(size=(10, 3)) + 4])
    native = IForestScorer(50, seed=7).fit(ref)
    alibi = IForestScorer(50, seed=7, engine="alibi").fit(ref)
    diff = alibi.score(x) - native.score(x)
    np.testing.assert_allclose(diff, diff[0], atol=1e-12)  # same trees: scores differ by the offset
    d_native = OutlierDetector.fit(ref, method="iforest", engine="native", n_estimators=50, seed=1)
    d_alibi = OutlierDetector.fit(ref, method="iforest", engine="alibi", n_estimators=50, seed=1)
    assert d_native.evaluate(x).k == d_alibi.evaluate(x).k >= 10


def test_outlier_detector_rate_is_calibrated_on_held_out_rows() -> None:
    rng = np.random.default_rng(6)
    det = OutlierDetector.fit(rng.multivariate_normal([0, 0, 0], COV, 4000), rate=0.05, seed=0)
    rates = [det.evaluate(rng.multivariate_normal([0, 0, 0], COV, 1000)).rate for _ in range(20)]
    assert abs(np.mean(rates) - det.calibration.ref_rate) < 0.01
    shifted = det.evaluate(rng.multivariate_normal([0, 0, 0], COV, 1000) * [1, -1, 1])  # broken correlation
    assert shifted.p_value < 1e-6 and shifted.change > 0.2
    with pytest.raises(ValueError, match="more reference rows"):
        OutlierDetector.fit(rng.normal(size=(20, 3)))
    with pytest.raises(ValueError, match="unknown outlier method"):
        make_scorer("lof")


# ----------------------------------------------------------------------------- margins


def test_margins_against_a_sort() -> None:
    rng = np.random.default_rng(7)
    p = rng.dirichlet([1, 1, 1, 1], 50)
    s = np.sort(p, axis=1)
    np.testing.assert_allclose(margins(p), s[:, -1] - s[:, -2])
    f = Frame.from_columns(
        event_id=np.array(["a", "b"], dtype=object), event_time=np.zeros(2), pred_value=np.array([0.9, 0.4])
    )
    np.testing.assert_allclose(frame_margins(f), [0.8, 0.2])
    assert frame_margins(Frame.from_columns(event_id=np.array(["a"], dtype=object), event_time=np.zeros(1))) is None
    with pytest.raises(ValueError, match="probabilities"):
        margins(np.ones((3, 1)))


def test_low_margin_windows_are_flagged() -> None:
    rng = np.random.default_rng(8)
    ref = margins(rng.dirichlet([5, 1, 1], 2000))
    det = MarginDetector.fit(ref, rate=0.1)
    assert det.evaluate(margins(rng.dirichlet([5, 1, 1], 500))).p_value > 0.001
    tie = np.array([0.45, 0.44, 0.11]) + rng.normal(0, 0.002, (50, 3))  # balanced on a boundary
    near = np.vstack([rng.dirichlet([5, 1, 1], 450), tie / tie.sum(axis=1, keepdims=True)])
    r = det.evaluate(margins(near))
    assert r.p_value < 1e-4 and r.rate > r.ref_rate


# ----------------------------------------------------------------------------- extraction


def _naive_distances(src, Z, B):
    hist: dict[str, list] = {}
    out: dict[str, list] = {}
    for s, z in zip(src, Z):
        h = hist.setdefault(s, [])
        if h:
            d = np.sqrt(((np.array(h[-B:]) - z) ** 2).sum(axis=1)).min()
            if d > 0:
                out.setdefault(s, []).append(d)
        h.append(z)
    return out


@pytest.mark.parametrize("cuts", [3, 60])
def test_tracker_matches_a_naive_loop(cuts: int) -> None:
    """Distances, counts and W equal a per-event loop, whatever the batch boundaries."""
    rng = np.random.default_rng(9)
    n, d, B, M, every = 3000, 4, 16, 60, 7
    names = np.array(["a", "b", "c", "d", "e"], dtype=object)
    src = rng.choice(names, n, p=[0.6, 0.2, 0.1, 0.05, 0.05])
    src = np.r_[src, np.repeat(names, every)]  # last batch: every source crosses a test checkpoint
    Z = rng.normal(size=(src.size, d)).astype(np.float32)
    Z[500] = Z[np.flatnonzero(src[:500] == src[500])[-1]]  # an exact repeat: not a distance
    t = ExtractionTracker(d, buffer=B, distances=M, min_queries=20, test_every=every)
    edges = np.r_[0, np.sort(rng.choice(np.arange(1, n), cuts, replace=False)), n, src.size]
    for a, b in itertools.pairwise(edges):  # with 3 cuts, source "a" has > 256 queries per batch
        t.update(src[a:b], Z[a:b], np.full(b - a, 1.0))
    naive = _naive_distances(src, Z, B)
    assert t.duplicates == 1
    for s in "abcde":
        st = t.state(s)
        ds = np.array(naive[s])
        assert st["n_queries"] == int((src == s).sum()) and st["n_distances"] == ds.size
        tail = ds[-M:]
        ring = t._d[t._slot[s]]
        np.testing.assert_allclose(np.sort(ring[: min(M, ds.size)]), np.sort(tail), atol=1e-5)
        assert st["w"] == pytest.approx(stats.shapiro(tail).statistic, abs=1e-5)


def test_tracker_tests_on_schedule_and_ignores_unknown_sources() -> None:
    t = ExtractionTracker(2, min_queries=20, test_every=10)
    rng = np.random.default_rng(10)
    r = t.update(np.array(["s"] * 15 + [None] * 5, dtype=object), rng.normal(size=(20, 2)))
    assert r.source.tolist() == ["s"] and not r.tested[0] and math.isnan(r.w[0])
    r = t.update(np.array(["s"] * 6, dtype=object), rng.normal(size=(6, 2)))  # 20 distances: first test
    assert r.tested[0] and 0 < r.w[0] <= 1
    r = t.update(np.array(["s"] * 5, dtype=object), rng.normal(size=(5, 2)))  # 25: not due
    assert not r.tested[0]
    r = t.update(np.array(["s"] * 5, dtype=object), rng.normal(size=(5, 2)))  # 30: due
    assert r.tested[0]
    with pytest.raises(ValueError, match=r"\(n, 2\)"):
        t.update(np.array(["s"], dtype=object), np.zeros((1, 3)))


def test_bounded_state_lru_eviction_and_idle_expiry() -> None:
    rng = np.random.default_rng(11)
    t = ExtractionTracker(3, buffer=8, distances=32, min_queries=20, max_sources=100, idle_seconds=50)
    for i in range(5):  # 5 batches of 40 new sources each, at increasing times
        ids = np.array([f"s{i}-{j}" for j in range(40)], dtype=object)
        t.update(np.repeat(ids, 3), rng.normal(size=(120, 3)), np.full(120, float(i)))
    assert t.n_sources == 100 and t.evicted == 100  # the oldest sources made room
    assert t.state("s0-0") is None and t.state("s4-0")["n_queries"] == 3
    assert t.memory_bytes <= 100 * (8 * 3 * 4 + 32 * 4 + 80)
    t.update(np.array(["late"], dtype=object), rng.normal(size=(1, 3)), np.array([100.0]))
    assert t.expired == 100 and t.n_sources == 1  # everyone else idle for > 50 s
    # more new sources in one batch than max_sources: the excess is counted, not tracked
    many = np.array([f"x{j}" for j in range(150)], dtype=object)
    t.update(many, rng.normal(size=(150, 3)), np.full(150, 101.0))
    assert t.n_sources == 100 and t.overflow == 50 and t.evicted == 101


def test_thousands_of_sources_in_bounded_time() -> None:
    rng = np.random.default_rng(12)
    t = ExtractionTracker(13, max_sources=5000, min_queries=50, test_every=25)
    ids = np.array([f"c{j}" for j in range(4000)], dtype=object)
    t0 = time.perf_counter()
    for _ in range(8):  # 8 windows of 4000 events, one per source
        t.update(ids, rng.normal(size=(4000, 13)), np.zeros(4000))
    per_window = (time.perf_counter() - t0) / 8
    assert t.n_sources == 4000 and t.evicted == 0
    assert per_window < 1.0  # ~50 ms on an idle core; generous for a loaded CI machine
    assert t.memory_bytes < 5000 * (128 * 13 * 4 + 256 * 4 + 100)


def test_calibration_bounds_the_benign_false_flag_rate() -> None:
    rng = np.random.default_rng(13)
    ref = rng.multivariate_normal([0, 0, 0], COV, 800)
    kw = dict(min_queries=50, test_every=25)
    cal = calibrate(ref, fpr=0.02, simulations=150, focus=0.5, horizon=300, seed=1, **kw)
    assert cal.n_uniform == 75 and cal.n_focused == 75 and 0 < cal.delta < 1
    assert (cal.null_min_w < cal.delta).mean() <= 0.02
    again = calibrate(ref, fpr=0.02, simulations=150, focus=0.5, horizon=300, seed=1, **kw)
    assert again.delta == cal.delta  # deterministic
    # fresh benign clients from the same distribution are flagged about as rarely
    fresh = simulate_benign(
        rng.multivariate_normal([0, 0, 0], COV, 800), n_uniform=150, n_focused=0, horizon=300, focus=1.0, seed=2, **kw
    )
    assert (fresh < cal.delta).mean() <= 0.05
    # a sign-step prober is flagged quickly
    seeds = ref[:5]
    steps = [seeds]
    S = seeds
    while sum(len(s) for s in steps) < 120:
        S = np.vstack([S, S + 0.1 * np.sign(rng.normal(size=S.shape))])
        steps.append(S[len(S) // 2 :])
    probe = np.vstack(steps)[:120]
    t = ExtractionTracker(3, calibration=cal, **kw)
    r = t.update(np.array(["p"] * 120, dtype=object), probe)
    assert r.flagged[0] and r.score[0] > 0.98 and r.first_flag[0] == 120
    assert np.isnan(cal.score(np.array([np.nan, 0.5])))[0]  # not tested yet: no score
    with pytest.raises(ValueError, match="reference rows"):
        calibrate(ref[:30], **kw)


def test_tail_quantile_order_statistic_then_exponential_tail() -> None:
    from detectors.adversarial.extraction import tail_quantile

    rng = np.random.default_rng(37)
    x = rng.uniform(size=1000)
    assert tail_quantile(x, 0.05) == np.sort(x)[int(np.floor(0.05 * 1001)) - 1]  # resolved: the order statistic
    # beyond what 2,000 simulations resolve: the fitted tail of 1 - Exp(scale 0.05) against scipy's exact quantile
    errs = []
    for seed in range(20):
        y = 1 - np.random.default_rng(seed).exponential(0.05, 2000)
        errs.append(tail_quantile(y, 1e-4) - (1 - stats.expon.isf(1e-4, scale=0.05)))
    assert abs(np.mean(errs)) < 0.02 and np.std(errs) < 0.05
    # lower levels reach further down; never-tested simulations (+inf) count in N, not in the fit
    assert 0 < tail_quantile(y, 1e-4) < tail_quantile(y, 1e-3) < tail_quantile(y, 0.005)
    assert tail_quantile(np.r_[y, np.full(200, np.inf)], 1e-3) > tail_quantile(y, 1e-3)  # fewer tested: rarer low W
    assert tail_quantile(np.full(50, np.inf), 0.01) == 0.0  # no simulated client reached a test: never flag


# ----------------------------------------------------------------------------- squeeze


MEANS = np.array([[0.0, 0, 0], [6, 0, 0], [0, 0, 6]])


def _sample(rng, n):
    """Three Gaussian classes: the 'natural' inputs of the test classifier."""
    y = rng.integers(0, 3, n)
    return MEANS[y] + rng.multivariate_normal([0, 0, 0], COV, n), y


def _classifier(rng):
    from sklearn.linear_model import LogisticRegression

    X, y = _sample(rng, 900)
    return LogisticRegression(max_iter=1000).fit(X, y), X


def test_quantile_squeezer_against_explicit_bins() -> None:
    rng = np.random.default_rng(14)
    x = rng.normal(size=(400, 1))
    sq = QuantileSqueezer.fit(x, bins=5)
    edges = np.quantile(x[:, 0], [0.2, 0.4, 0.6, 0.8])
    probe = np.array([[-3.0], [0.0], [3.0], [np.nan]])
    b = np.searchsorted(edges, probe[:3, 0], side="right")
    expected = [np.median(x[np.searchsorted(edges, x[:, 0], side="right") == k, 0]) for k in b]
    np.testing.assert_allclose(sq.transform(probe)[:3, 0], expected)
    assert np.isnan(sq.transform(probe)[3, 0])


def test_squeeze_flags_boundary_inputs(tmp_path) -> None:
    import joblib

    rng = np.random.default_rng(15)
    clf, X = _classifier(rng)
    det = SqueezeDetector.fit(clf, list("abc"), X, bins=8, rate=0.05, sample=300)
    benign, _ = det.evaluate(_sample(rng, 300)[0])
    assert benign.p_value > 1e-3
    # points near the boundary between class 0 and 1 (a = 3)
    edge = rng.multivariate_normal([3, 0, 0], COV * 0.05, 300)
    attacked, mean = det.evaluate(edge)
    assert attacked.p_value < 1e-6 and mean > 0
    path = tmp_path / "m.joblib"
    joblib.dump(clf, path)
    assert hasattr(load_estimator(path), "predict_proba")
    joblib.dump({"not": "a model"}, tmp_path / "bad.joblib")
    with pytest.raises(SqueezeModelError, match="no predict_proba"):
        load_estimator(tmp_path / "bad.joblib")
    with pytest.raises(SqueezeModelError, match="not found"):
        load_estimator(tmp_path / "missing.joblib")


# ----------------------------------------------------------------------------- the monitor


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(16)
    clf, X = _classifier(rng)
    Xr = X[rng.permutation(len(X))]
    spec = AdversarialSpec.model_validate(SMALL)
    ref = frame(Xr, proba=clf.predict_proba(Xr))
    return clf, X, AdversarialMonitor.fit(ref, FEATURES, spec, task="classification")


def _window(clf, X, rng, n=400, attack=0, src=None):
    rows, _ = _sample(rng, n)
    if attack:  # inputs balanced on a decision boundary, anywhere in a wide box (mostly off-manifold)
        cand = rng.uniform(-3, 9, (400 * attack, 3))
        cand = cand[margins(clf.predict_proba(cand)) < 0.05]
        rows[:attack] = cand[:attack]
        if src is None:
            src = np.array(["evader"] * attack + ["u1", "u2", "u3"] * n, dtype=object)[:n]
    sources = src if src is not None else rng.choice(np.array(["u1", "u2", "u3"], dtype=object), n)
    return frame(rows, sources, clf.predict_proba(rows))


def test_monitor_scores_benign_low_and_attacks_high(fitted) -> None:
    import copy

    clf, X, base = fitted
    mon = copy.deepcopy(base)
    rng = np.random.default_rng(17)
    assert base.names == ["a", "b", "c"]  # categoricals are not used
    benign = [mon.evaluate(_window(clf, X, rng)) for _ in range(30)]
    attacked = [mon.evaluate(_window(clf, X, rng, attack=60)) for _ in range(10)]
    assert sum(r.flagged for r in benign) <= 2  # alpha = 0.01 per window
    assert all(r.flagged and r.score > 0.99 for r in attacked)
    r = attacked[0]
    # the attacker's own rates stand out from the rest of the window: that is what flags
    assert {"outlier_source", "low_margin_source"} <= set(r.components)
    assert r.components["low_margin_source"].source == "evader" and r.components["outlier_source"].source == "evader"
    assert r.flagged_by and set(r.flagged_by) <= {"outlier_source", "low_margin_source"}
    # the population rates against the reference see it too, but are reported, not scored
    assert r.population["outlier"].p_value < 1e-4 and r.population["low_margin"].p_value < 1e-4
    assert r.p_value == pytest.approx(bonferroni_min([c.p_value for c in r.components.values()]))
    assert r.suspects == {"evader": ",".join(r.flagged_by)}


def test_records_names_fields_and_top_k(fitted) -> None:
    import copy

    clf, X, base = fitted
    mon = copy.deepcopy(base)
    rng = np.random.default_rng(18)
    srcs = np.array([f"client\n{i}" for i in range(30)], dtype=object)
    for _ in range(4):
        res = mon.evaluate(_window(clf, X, rng, n=1200, src=srcs[rng.integers(0, 30, 1200)]))
    recs = mon.records(res, {"model": "m", "version": "1"}, 123)
    adv = [r for r in recs if r.measurement == R.ADVERSARIAL]
    src = [r for r in recs if r.measurement == R.SOURCE]
    assert len(adv) == 1 and len(src) == base.spec.extraction.top_k
    f = adv[0].fields
    for key in (
        "score",
        "p_value",
        "threshold",
        "flagged",
        "n_events",
        "outlier_rate",
        "outlier_ref_rate",
        "outlier_change",
        "outlier_p_value",
        "low_margin_rate",
        "low_margin_p_value",
        "extraction_p_value",
        "extraction_flagged",
        "sources_active",
        "sources_tracked",
    ):
        assert key in f, key
    assert adv[0].tags == {"model": "m", "version": "1"} and adv[0].time_ns == 123
    assert 0 <= f["score"] <= 1 and isinstance(f["flagged"], bool)
    for r in src:
        assert set(r.tags) == {"model", "version", R.T_SOURCE} and "\n" not in r.tags[R.T_SOURCE]
        assert isinstance(r.fields["extraction_flag"], bool)  # one name only (dashboard, alert rules)
        assert not {"flagged", "extraction"} & set(r.fields)
        assert {"shapiro_w", "score", "n_queries", "n_window", "threshold"} <= set(r.fields)
    for r in recs:
        assert all(not (isinstance(v, float) and not math.isfinite(v)) for v in r.fields.values())


def test_regression_and_no_numeric_features() -> None:
    rng = np.random.default_rng(19)
    spec = AdversarialSpec.model_validate(SMALL)
    mon = AdversarialMonitor.fit(frame(rng.normal(size=(500, 3))), FEATURES, spec, task="regression")
    r = mon.evaluate(frame(rng.normal(size=(100, 3))))
    assert set(r.population) == {"outlier"} and not r.components  # no source ids: nothing to contrast
    cat_only = [FeatureSpec(name="colour", kind="categorical")]
    mon = AdversarialMonitor.fit(frame(rng.normal(size=(500, 3))), cat_only, spec, task="regression")
    assert mon.outlier is None and mon.tracker is None and "no numeric" in mon.notes[0]
    assert mon.evaluate(frame(rng.normal(size=(10, 3)))).score == 0.0


def test_margin_reference_warms_up_when_the_reference_has_no_probabilities(fitted) -> None:
    clf, X, _ = fitted
    rng = np.random.default_rng(20)
    spec = AdversarialSpec.model_validate({**SMALL, "margin": {"warmup_events": 500}})
    mon = AdversarialMonitor.fit(frame(X), FEATURES, spec, task="classification")
    assert mon.margin is None and "first 500" in mon.notes[-1]
    assert "low_margin" not in mon.evaluate(_window(clf, X, rng, n=300)).population
    mon.evaluate(_window(clf, X, rng, n=300))  # 600 margins seen: calibrated on the first 500
    assert mon.margin is not None
    r = mon.evaluate(_window(clf, X, rng, n=300))
    assert "low_margin" in r.population and "low_margin_source" in r.components


def test_spec_validation() -> None:
    with pytest.raises(ValueError, match="min_queries"):
        ExtractionSpec(min_queries=300, distances=256)
    with pytest.raises(ValueError):
        AdversarialSpec.model_validate({"outlier": {"method": "lof"}})
    assert AdversarialSpec().squeeze.enabled is False


# ----------------------------------------------------------------------------- evaluator


class Ctx:
    """What the evaluator reads from ``detectors.runner.WindowContext``."""

    def __init__(self, f: Frame, cache=None, adversarial=None, task="classification", version="1"):
        self.model_id, self.version, self.frame, self.task = "m", version, f, task
        self.features = tuple(FEATURES)
        self.reference = None
        self.cache = cache or {}
        self.time_ns = 5
        if adversarial is not None:
            self.adversarial = adversarial

    def tags(self, segmented=True):
        return {"model": self.model_id, "version": self.version}


def test_evaluator_warms_up_then_scores(fitted) -> None:
    clf, X, _ = fitted
    rng = np.random.default_rng(21)
    assert AdversarialEvaluator(AdversarialSpec.model_validate(SMALL)).evaluate(Ctx(_window(clf, X, rng))) == []
    ev = AdversarialEvaluator(AdversarialSpec.model_validate({**SMALL, "warmup_events": 600}))
    assert ev.name == "adversarial" and ev.segmented is False
    assert ev.evaluate(Ctx(_window(clf, X, rng, n=400))) == []  # warming up
    assert ev.evaluate(Ctx(_window(clf, X, rng, n=400))) == []  # 800 >= 600: fitted on the first 600
    assert ev.monitor("m", "1") is not None
    recs = ev.evaluate(Ctx(_window(clf, X, rng, n=400)))
    assert recs[0].measurement == R.ADVERSARIAL and recs[0].time_ns == 5
    # reference rows attached by the worker are used at once
    from detectors.reference import Reference, attach_reference_frame

    ref = frame(X, proba=clf.predict_proba(X))
    ctx = Ctx(_window(clf, X, rng))
    ctx.reference = attach_reference_frame(Reference.from_frame(ref, FEATURES), ref)
    ev2 = AdversarialEvaluator(AdversarialSpec.model_validate(SMALL))
    assert ev2.evaluate(ctx)[0].measurement == R.ADVERSARIAL
    off = AdversarialSpec.model_validate({"enabled": False})
    assert ev2.evaluate(Ctx(_window(clf, X, rng), adversarial=off)) == []


def test_evaluator_fit_failure_is_raised_once(fitted) -> None:
    clf, X, _ = fitted
    rng = np.random.default_rng(22)
    spec = AdversarialSpec.model_validate({**SMALL, "squeeze": {"model": "/nonexistent/model.joblib"}})
    ev = AdversarialEvaluator(spec)
    ref = frame(X, proba=clf.predict_proba(X))
    with pytest.raises(AdversarialFitError, match="estimator file not found"):
        ev.evaluate(Ctx(_window(clf, X, rng), cache={"reference_frame": ref}))
    assert ev.evaluate(Ctx(_window(clf, X, rng), cache={"reference_frame": ref})) == []


def test_detectors_stay_pure() -> None:
    """Importing the evaluator (everything it needs) pulls in no I/O package."""
    import subprocess
    import sys

    code = (
        "import sys, detectors.adversarial.evaluator, detectors.adversarial.squeeze; "
        "print(sorted({m.split('.')[0] for m in sys.modules}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    for banned in ("faust", "kafka", "aiokafka", "influxdb_client", "streamlit", "streams", "dashboard"):
        assert f"'{banned}'" not in out, banned


# ----------------------------------------------------------------------------- drift vs probing


def test_source_contrast_is_fishers_exact_test_per_source() -> None:
    from detectors.adversarial.contrast import source_contrast

    rng = np.random.default_rng(30)
    src = rng.choice(np.array([f"c{i}" for i in range(8)], dtype=object), 600)
    src[rng.random(600) < 0.05] = None  # unknown sources count in the rest, are never tested
    exceed = rng.random(600) < 0.15
    exceed[src == "c3"] |= rng.random(int((src == "c3").sum())) < 0.6  # c3 stands out
    r = source_contrast("low_margin_source", src, exceed, min_events=10, min_excess=0.0)
    known = np.array([s is not None for s in src])
    names = sorted(set(src[known]))
    assert r.n_tested == len(names) and r.source == "c3"
    for name in names:  # each source's p-value: scipy's one-sided Fisher exact test, source vs the rest
        mine = src == name
        table = [
            [int(exceed[mine].sum()), int((~exceed[mine]).sum())],
            [int(exceed[~mine].sum()), int((~exceed[~mine]).sum())],
        ]
        expected = stats.fisher_exact(table, alternative="greater").pvalue
        if exceed[mine].mean() < exceed[~mine].mean():  # one-sided: a source below the rest is never suspect
            expected = 1.0
        assert r.per_source[name][2] == pytest.approx(expected, rel=1e-9)
    assert r.p_value == pytest.approx(min(1.0, len(names) * r.per_source["c3"][2]))
    # the effect-size floor: a small excess is not a finding however many events back it
    floor = source_contrast("x", src, exceed, min_events=10, min_excess=0.9)
    assert floor.p_value == 1.0 and floor.n_tested == len(names)
    # a source alone in its window, or too few events: nothing to test
    assert source_contrast("x", np.array(["a"] * 50, dtype=object), exceed[:50]).n_tested == 0
    assert source_contrast("x", src, exceed, min_events=1000).n_tested == 0
    assert source_contrast("x", None, exceed).p_value == 1.0
    with pytest.raises(ValueError, match="x: 3 source ids for 600"):
        source_contrast("x", src[:3], exceed)


def test_source_contrast_is_calibrated_whatever_the_window_rate() -> None:
    """Exchangeable sources: the window p-value is (conservatively) uniform, at any base rate (= any drift)."""
    from detectors.adversarial.contrast import source_contrast

    rng = np.random.default_rng(31)
    names = np.array([f"c{i}" for i in range(20)], dtype=object)
    w = 1.0 / np.arange(1, 21)
    for base in (0.05, 0.3, 0.7):
        ps = np.array(
            [
                source_contrast(
                    "x", names[rng.choice(20, 500, p=w / w.sum())], rng.random(500) < base, min_excess=0.0
                ).p_value
                for _ in range(400)
            ]
        )
        assert (ps < 0.05).mean() <= 0.05 and (ps < 0.01).mean() <= 0.015, base


@pytest.fixture(scope="module")
def wine_world():
    """The demo's wine classifier and its monitor, fitted on 1,000 stationary events (real data: sklearn's wine)."""
    from benchmarks.adversarial import Options, World

    world = World(Options())
    X, _ = world.model.sample(np.random.default_rng(32), 1000)
    ref = world.frame(X, np.full(1000, None, dtype=object))
    mon = AdversarialMonitor.fit(
        ref, world.features, AdversarialSpec.model_validate({"extraction": {"simulations": 300}})
    )
    return world, mon


def _shifted_windows(world, mon, kind: str, n_windows: int, seed: int, evader: bool = False):
    import copy

    from streams.devstack.attacks import benign_shift_sample, evasion

    m, mon = world.model, copy.deepcopy(mon)
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n_windows):
        src = world.clients(rng, 500, 40)
        if kind == "unusual-client":
            X, _ = m.sample(rng, 500)
            own = rng.random(500) < 0.2
            X[own] = benign_shift_sample(m, kind, rng, int(own.sum()))[0]
            src[own] = "client-unusual"
        else:
            X, _ = benign_shift_sample(m, kind, rng, 500, progress=(i + 0.5) / n_windows)
        if evader:  # 50 evasion attempts from one client, inside the shifted traffic
            X[:50] = evasion(m.estimator, X[:50], scale=m.std, lo=m.lo, hi=m.hi, finish=m.finish_inputs).X
            src[:50] = "evader-1"
        out.append(mon.evaluate(world.frame(X, src, t0=i * 2.5)))
    return out


@pytest.mark.parametrize(
    "kind",
    [
        "demo-drift",
        "mean-shift",
        "scale",
        "toward-boundary",
        "new-segment",
        "seasonal",
        "subpopulation",
        "unusual-client",
    ],
)
def test_benign_shifts_flag_no_window_and_no_source(wine_world, kind: str) -> None:
    world, mon = wine_world
    res = _shifted_windows(world, mon, kind, 12, seed=33)
    assert not any(r.flagged for r in res), [(r.score, r.top_component) for r in res]
    assert not any(r.suspects for r in res), [r.suspects for r in res if r.suspects]
    if kind in ("demo-drift", "toward-boundary"):  # the inputs moved: the population low-margin rate rose ...
        assert np.mean([r.population["low_margin"].p_value < 1e-3 for r in res]) >= 0.75
        # ... which is what the old score (population rates in it) flags: it cried wolf on this drift
        old = AdversarialMonitor(
            AdversarialSpec(score_population=True), mon.names, mon.standardizer, mon.outlier, mon.margin, None, None
        )
        assert old.evaluate(world.frame(*_frames_of(world, kind, 34))).flagged


def _frames_of(world, kind: str, seed: int):
    from streams.devstack.attacks import benign_shift_sample

    rng = np.random.default_rng(seed)
    X, _ = benign_shift_sample(world.model, kind, rng, 500)
    return X, world.clients(rng, 500, 40)


def test_evasion_inside_a_drift_is_still_flagged_and_named(wine_world) -> None:
    world, mon = wine_world
    for kind in ("demo-drift", "toward-boundary"):
        res = _shifted_windows(world, mon, kind, 4, seed=35, evader=True)
        assert all(r.flagged and "low_margin_source" in r.flagged_by for r in res), kind
        assert all(r.components["low_margin_source"].source == "evader-1" for r in res)
        assert all(r.suspects.get("evader-1", "").startswith("low_margin_source") for r in res)
        recs = mon.records(res[-1], {"model": "wine", "version": "1"}, 1)
        adv = recs[0].fields
        assert adv["flagged_by"].startswith("low_margin_source") and adv["low_margin_source_suspect"] == "evader-1"
        assert adv["top_component"] == "low_margin_source" and adv["score_population"] is False
        ev = next(r for r in recs[1:] if r.tags[R.T_SOURCE] == "evader-1")
        assert ev.fields["flag"] is True and ev.fields["flagged_by"].startswith("low_margin_source")
        assert ev.fields["extraction_flag"] is False and ev.fields["low_margin_source_rate"] > 0.9


def test_benign_shift_sample_kinds_and_errors() -> None:
    from streams.devstack.attacks import BENIGN_SHIFTS, benign_shift_sample
    from streams.devstack.models import build_diabetes, build_wine

    wine, diabetes = build_wine(), build_diabetes()
    rng = np.random.default_rng(36)
    base, _ = wine.sample(rng, 4000)
    X, _ = benign_shift_sample(wine, "demo-drift", rng, 4000)
    j = [wine.index(f) for f in wine.default_drift_features]
    np.testing.assert_allclose((X[:, j].mean(0) - base[:, j].mean(0)) / wine.std[j], 1.0, atol=0.1)
    X, _ = benign_shift_sample(wine, "scale", rng, 4000)
    assert np.all(X.std(0)[~wine.discrete] > 1.2 * base.std(0)[~wine.discrete] - 1e-9)
    X, _ = benign_shift_sample(wine, "toward-boundary", rng, 4000)
    from detectors.adversarial.margin import margins

    assert np.median(margins(wine.predict(X)["proba"])) < np.median(margins(wine.predict(base)["proba"])) - 0.2
    X, y = benign_shift_sample(wine, "new-segment", rng, 1000)
    assert (y == wine.classes[1]).mean() > 0.7
    for kind in BENIGN_SHIFTS:
        if kind != "toward-boundary":
            assert benign_shift_sample(diabetes, kind, rng, 50)[0].shape == (50, diabetes.n_inputs)
    with pytest.raises(ValueError, match="toward-boundary needs a classifier"):
        benign_shift_sample(diabetes, "toward-boundary", rng, 5)
    with pytest.raises(ValueError, match="unknown benign shift 'storm'"):
        benign_shift_sample(wine, "storm", rng, 5)


def test_a_fit_failure_in_prepare_is_raised_there_once_and_the_windows_get_nothing(fitted) -> None:
    # prepare (ahead of the first window) meets the failure the first window would have met; the windows
    # after it then get no adversarial records, as after a failed fit in evaluate
    clf, X, _ = fitted
    rng = np.random.default_rng(22)
    spec = AdversarialSpec.model_validate({**SMALL, "squeeze": {"model": "/nonexistent/model.joblib"}})
    ev = AdversarialEvaluator(spec)
    ref = frame(X, proba=clf.predict_proba(X))
    with pytest.raises(AdversarialFitError, match="estimator file not found"):
        ev.prepare(Ctx(_window(clf, X[:0], rng), cache={"reference_frame": ref}))
    assert ev.evaluate(Ctx(_window(clf, X, rng), cache={"reference_frame": ref})) == []
