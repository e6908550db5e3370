"""Window summaries (detectors/summaries.py): statistics from bins against scipy on the raw rows,
merge exactness, bounded memory, serialisation, quality counts and verdicts against the exact path.

Tolerances (1,024 fine bins, windows of 5,000 rows, reference of 20,000 rows):

* KS D: the summary's D is a lower bound of the exact D and ``ks_upper`` an upper bound
  (both asserted), and the difference is at most 0.001 (~one bin's mass);
* CvM T: within 3 % of scipy's (or 0.005 absolute for small T);
* Wasserstein: within the summary's own bound, and within 0.01 reference sd;
* chi-square, PSI, JS, quality counts: equal to the exact computation.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from detectors.frame import Frame
from detectors.prediction import PredictionReference, prediction_drift
from detectors.quality import data_quality
from detectors.reference import Reference, attach_reference_frame
from detectors.spec import DriftSpec, FeatureSpec, ThresholdSpec
from detectors.summaries import (
    SummaryError,
    SummaryLayout,
    WindowSummary,
    merge,
    numeric_statistics,
    row_keys,
    summary_drift,
    summary_quality,
)
from detectors.univariate import univariate_drift

CATS = np.array(list("abcdefg"))
PROBS = np.array([0.3, 0.2, 0.2, 0.1, 0.1, 0.05, 0.05])

FEATURES = [
    FeatureSpec(name="normal", kind="numeric", min=-2.5, max=2.5),
    FeatureSpec(name="heavy", kind="numeric"),
    FeatureSpec(name="skewed", kind="numeric", nullable=False),
    FeatureSpec(name="ints", kind="numeric"),
    FeatureSpec(name="c", kind="categorical", allowed=["a", "b", "c", "d", "e", "f", "g"]),
    FeatureSpec(name="absent", kind="numeric"),
]


def make_frame(
    rng: np.random.Generator,
    n: int,
    shift: float = 0.0,
    start: int = 0,
    *,
    dirty: bool = False,
    unseen: tuple[str, ...] = (),
    outputs: bool = False,
) -> Frame:
    num = {
        "normal": rng.normal(shift, 1.0, n),
        "heavy": rng.standard_t(3, n) * 10,
        "skewed": rng.lognormal(0.0, 1.0, n),
        "ints": rng.integers(0, 6, n).astype(float),  # heavy ties
    }
    cat = rng.choice(CATS, n, p=PROBS).astype(object)
    te = {k: np.zeros(n, dtype=bool) for k in (*num, "c")}
    if dirty:
        for k in num:
            num[k][rng.random(n) < 0.02] = np.nan
        num["heavy"][rng.random(n) < 0.01] = np.inf
        bad = rng.random(n) < 0.01
        num["skewed"][bad] = np.nan
        te["skewed"] = bad
        cat[rng.random(n) < 0.03] = None
        bad = (rng.random(n) < 0.01) & np.not_equal(cat, None)
        cat[bad] = None
        te["c"] = bad
    if unseen:
        pos = rng.random(n) < 0.05
        cat[pos] = rng.choice(np.array(unseen), int(pos.sum())).astype(object)
    kw = {}
    if outputs:
        p1 = 1 / (1 + np.exp(-(num["normal"] - 0.2)))
        kw = dict(
            pred_proba=np.column_stack([1 - p1, p1]),
            classes=("no", "yes"),
            pred_label=np.where(p1 > 0.5, "yes", "no").astype(object),
        )
    f = Frame.from_columns(
        event_id=np.char.add("ev-", np.arange(start, start + n).astype(str)).astype(object),
        event_time=np.arange(start, start + n, dtype=float),
        numeric=num,
        categorical={"c": cat},
        type_error=te,
        **kw,
    )
    if dirty:
        f.unknown = {"colour": rng.random(n) < 0.1}
    return f


@pytest.fixture(scope="module")
def setup():
    rng = np.random.default_rng(11)
    rows = make_frame(rng, 20_000, outputs=True)
    ref = attach_reference_frame(Reference.from_frame(rows, FEATURES), rows)
    pref = PredictionReference.from_frame(rows)
    layout = SummaryLayout.build(ref, FEATURES, outputs=pref, reservoir=500)
    return rng, ref, pref, layout


def summarise(layout: SummaryLayout, frame: Frame, batch: int = 700) -> WindowSummary:
    s = layout.summary()
    for lo in range(0, len(frame), batch):
        s.update(frame.take(slice(lo, lo + batch)))
    return s


NUMERIC = ("normal", "heavy", "skewed", "ints")


def anderson_t(r: np.ndarray, x: np.ndarray) -> float:
    """Two-sample CvM T = nm/N² Σ (F_n - G_m)² over the pooled sample (Anderson 1962), on raw values."""
    pooled = np.concatenate((r, x))
    f = np.searchsorted(np.sort(r), pooled, side="right") / r.size
    g = np.searchsorted(np.sort(x), pooled, side="right") / x.size
    n, m = r.size, x.size
    return float(n * m / (n + m) ** 2 * np.sum((f - g) ** 2))


def test_numeric_statistics_against_scipy_on_the_rows(setup):
    rng, ref, _, layout = setup
    worst_ks = 0.0
    for shift in (0.0, 0.03, 0.1, 0.5):
        w = make_frame(rng, 5000, shift, dirty=True)
        s = summarise(layout, w)
        a = s.arrays
        st = numeric_statistics(layout, a["f.num_counts"], a["f.num_sums"], a["f.num_min"], a["f.num_max"])
        for i, nl in enumerate(layout.numeric):
            if nl.name not in NUMERIC:
                continue
            r = ref.numeric[nl.name].values
            x = w.numeric[nl.name]
            x = x[np.isfinite(x)]
            assert st.n_cur[i] == x.size and st.n_ref[i] == r.size
            d = stats.ks_2samp(r, x).statistic
            assert st.ks[i] <= d + 1e-12 <= st.ks_upper[i] + 1e-12, nl.name
            assert d - st.ks[i] <= 0.001, (nl.name, d, st.ks[i])
            worst_ks = max(worst_ks, d - st.ks[i])
            if nl.name == "ints":  # scipy's mid-rank formula is not T with ties (T ~ 130 for one law)
                t = anderson_t(r, x)
                assert st.cvm[i] == pytest.approx(t, rel=1e-9)
            else:
                t = stats.cramervonmises_2samp(r, x).statistic
                assert t == pytest.approx(anderson_t(r, x), rel=1e-6)
                assert abs(st.cvm[i] - t) <= max(0.03 * t, 0.005), (nl.name, t, st.cvm[i])
            wd = stats.wasserstein_distance(r, x)
            assert abs(st.wasserstein[i] - wd) <= st.wasserstein_bound[i] + 1e-9, nl.name
            assert abs(st.wasserstein[i] - wd) <= 0.01 * np.std(r), (nl.name, wd, st.wasserstein[i])
            if nl.name == "ints":  # every distinct value has its own bin: exact
                assert st.ks[i] == pytest.approx(d, abs=1e-12)
                assert st.wasserstein[i] == pytest.approx(wd, rel=1e-9)
    assert worst_ks > 0  # the bins do lose something on continuous data


def test_drift_from_summary_matches_the_exact_path(setup):
    rng, ref, _, layout = setup
    for method in ("p_value", "both"):
        spec = DriftSpec(threshold=ThresholdSpec(method=method))
        for shift in (0.0, 0.05, 0.5):
            w = make_frame(rng, 5000, shift, dirty=True, unseen=("zz", "yy"))
            exact = univariate_drift(w, ref, spec)
            summ = summary_drift(summarise(layout, w), ref, spec)
            assert summ.engine == "summary"
            assert [f.feature for f in exact.features] == [f.feature for f in summ.features] or {
                f.feature for f in exact.features
            } == {f.feature for f in summ.features}
            assert summ.skipped == exact.skipped == ("absent",)
            for f in exact.features:
                g = summ.feature(f.feature)
                assert (g.n_ref, g.n_cur, g.test) == (f.n_ref, f.n_cur, f.test)
                assert g.psi == pytest.approx(f.psi, abs=1e-12) and g.js == pytest.approx(f.js, abs=1e-12)
                if f.kind == "categorical":  # unseen categories in distinct buckets: the same table
                    assert g.statistic == pytest.approx(f.statistic, rel=1e-12)
                    assert g.p_value == pytest.approx(f.p_value, rel=1e-9, abs=1e-300)
                else:
                    assert abs(g.statistic - f.statistic) <= 0.001
                    assert abs(g.p_value - f.p_value) <= 0.05
            if shift == 0.5:
                assert summ.feature("normal").drift and exact.feature("normal").drift
            assert summ.drift == exact.drift


def test_chi_square_equals_scipy_with_unseen_categories(setup):
    rng, ref, _, layout = setup
    w = make_frame(rng, 3000, unseen=("new-1", "new-2", "new-3"))
    res = summary_drift(summarise(layout, w), ref, DriftSpec(threshold=ThresholdSpec(method="p_value")), ["c"])
    vals = w.categorical["c"]
    cats = sorted(set(ref.categorical["c"].categories) | set(vals))
    table = np.array(
        [
            [
                int(ref.categorical["c"].counts[list(ref.categorical["c"].categories).index(c)])
                if c in ref.categorical["c"].categories
                else 0
                for c in cats
            ],
            [int(np.sum(vals == c)) for c in cats],
        ]
    )
    chi2, p, _dof, _ = stats.chi2_contingency(table)
    f = res.feature("c")
    assert f.statistic == pytest.approx(chi2, rel=1e-10) and f.p_value == pytest.approx(p, rel=1e-8)


def test_quality_counts_equal_data_quality(setup):
    rng, _, _, layout = setup
    w = make_frame(rng, 4000, dirty=True, unseen=("x",))
    got = summary_quality(summarise(layout, w), FEATURES)
    want = data_quality(w, FEATURES)
    assert got == want
    assert sum(q.n_unknown_category for q in got) > 0 and sum(q.n_type_error for q in got) > 0
    assert sum(q.n_out_of_range for q in got) > 0 and sum(q.n_null_violation for q in got) > 0


def test_merge_is_exact(setup):
    rng, _, _, layout = setup
    a = make_frame(rng, 3000, 0.2, 0, dirty=True, unseen=("u1",), outputs=True)
    b = make_frame(rng, 4500, 0.0, 3000, dirty=True, unseen=("u2",), outputs=True)
    from detectors.frame import concat

    whole = summarise(layout, concat([a, b]), batch=1000)
    parts = merge(summarise(layout, a, batch=333), summarise(layout, b, batch=999))
    assert parts.equals(whole)
    assert whole.n == 7500 and whole.reservoir.n == 500
    assert np.array_equal(parts.arrays["f.num_counts"], whole.arrays["f.num_counts"])
    assert np.array_equal(parts.arrays["o.cat_counts"], whole.arrays["o.cat_counts"])
    assert list(parts.reservoir.frame.event_id) == list(whole.reservoir.frame.event_id)
    assert parts.unknown == whole.unknown and parts.n_unknown_rows == whole.n_unknown_rows > 0
    # a window split differently, merged in the other order: the same summary
    assert merge(summarise(layout, b), summarise(layout, a)).equals(whole)


def test_memory_is_bounded_by_configuration_not_events(setup):
    rng, _, _, layout = setup
    s = layout.summary()
    s.update(make_frame(rng, 2000))
    small = s.nbytes
    for k in range(20):
        s.update(make_frame(rng, 5000, start=2000 + 5000 * k))
    assert s.n == 102_000
    assert s.nbytes == small
    assert len(s.to_bytes()) < 2 * small  # compressed checkpoint no larger than the state
    # configuration decides: fewer bins, smaller summary
    rows = make_frame(rng, 5000)
    ref = Reference.from_frame(rows, FEATURES)
    assert (
        SummaryLayout.build(ref, FEATURES, bins=64).summary().nbytes
        < SummaryLayout.build(ref, FEATURES, bins=1024).summary().nbytes
    )


def test_reservoir_is_a_uniform_sample(setup):
    rng, _, _, _ = setup
    rows = make_frame(rng, 5000)
    layout = SummaryLayout.build(Reference.from_frame(rows, FEATURES), FEATURES, reservoir=2000)
    s = layout.summary()
    w = make_frame(rng, 40_000)
    for lo in range(0, 40_000, 4000):
        s.update(w.take(slice(lo, lo + 4000)))
    sample = s.reservoir.frame.event_time
    assert sample.shape[0] == 2000 and np.unique(s.reservoir.frame.event_id).shape[0] == 2000
    # event times are 0..39,999: a uniform sample of them has a uniform distribution
    assert stats.kstest(sample / 40_000, "uniform").pvalue > 0.001
    assert np.all(np.diff(s.reservoir.keys.astype(np.float64)) >= 0)


def test_row_keys_are_stable_across_processes():
    ids = np.array(["ev-1", "a", "ÿ-ünïcode", "x" * 40], dtype=object)
    code = (
        "import numpy as np; from detectors.summaries import row_keys; "
        "print(row_keys(np.array(['ev-1', 'a', 'ÿ-ünïcode', 'x' * 40], dtype=object)).tolist())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "123"},
    ).stdout
    assert eval(out) == row_keys(ids).tolist()
    # ids of a wider batch hash the same (padding is not hashed)
    assert row_keys(np.array(["a"], dtype=object))[0] == row_keys(ids)[1]


def test_serialisation_round_trip(setup):
    rng, _, _, layout = setup
    s = summarise(layout, make_frame(rng, 3000, dirty=True, unseen=("q",), outputs=True))
    back = WindowSummary.from_bytes(layout, s.to_bytes())
    assert back.equals(s, rtol=0.0)
    fr, fb = s.reservoir.frame, back.reservoir.frame
    assert list(fb.categorical["c"]) == list(fr.categorical["c"])
    assert np.array_equal(fb.numeric["heavy"], fr.numeric["heavy"], equal_nan=True)
    assert np.array_equal(fb.pred_proba, fr.pred_proba, equal_nan=True) and fb.classes == fr.classes
    assert np.array_equal(fb.type_error["skewed"], fr.type_error["skewed"])
    with pytest.raises(SummaryError, match="not a serialised"):
        WindowSummary.from_bytes(layout, b"garbage")
    other = SummaryLayout.build(Reference.from_frame(make_frame(rng, 3000), FEATURES), FEATURES)
    with pytest.raises(SummaryError, match="another layout"):
        WindowSummary.from_bytes(other, s.to_bytes())
    with pytest.raises(SummaryError, match="different layouts"):
        merge(s, other.summary())


def test_prediction_drift_from_summary(setup):
    rng, _, pref, layout = setup
    spec = DriftSpec(threshold=ThresholdSpec(method="p_value"))
    for shift in (0.0, 0.6):
        w = make_frame(rng, 5000, shift, outputs=True)
        exact = prediction_drift(w, pref, spec)
        summ = summary_drift(summarise(layout, w), pref.reference, spec, outputs=True)
        assert {f.feature for f in summ.features} == {f.feature for f in exact.features}
        for f in exact.features:
            g = summ.feature(f.feature)
            assert g.psi == pytest.approx(f.psi, abs=1e-12)
            assert abs(g.statistic - f.statistic) <= (0.001 if f.kind == "numeric" else 1e-9 * f.statistic)
        assert summ.drift == exact.drift == (shift > 0)


def test_build_rejects_bad_configuration(setup):
    _, ref, _, _ = setup
    with pytest.raises(ValueError, match="bins"):
        SummaryLayout.build(ref, FEATURES, bins=1)
    with pytest.raises(ValueError, match="reservoir"):
        SummaryLayout.build(ref, FEATURES, reservoir=-1)
    with pytest.raises(SummaryError, match="not in the summary"):
        summary_quality(SummaryLayout.build(ref, FEATURES[:1]).summary(), FEATURES)


def test_evaluate_window_from_a_summary(setup):
    """The runner on a summary: the same points as on the rows, with equal counts, quality, histograms and
    drift verdicts; the evaluators that need every event say why they did not run."""
    from detectors import records as R
    from detectors.advanced import prediction_reference
    from detectors.runner import SUMMARY_SKIP, WindowContext, evaluate_window

    rng, ref, _, _ = setup
    layout = SummaryLayout.build(ref, FEATURES, outputs=prediction_reference(ref), reservoir=300)
    w = make_frame(rng, 5000, 0.5, dirty=True, outputs=True)
    s = summarise(layout, w)
    base = dict(model_id="m", version="1", reference=ref, features=tuple(FEATURES), window_start=0.0, window_end=5000.0)
    exact = evaluate_window(WindowContext(frame=w, **base))
    approx = evaluate_window(WindowContext(frame=s.reservoir.frame, summary=s, **base))

    def by_key(records):
        return {(r.measurement, tuple(sorted(r.tags.items()))): r.fields for r in records}

    e, a = by_key(exact), by_key(approx)
    skipped = {k for k, f in a.items() if f.get("reason") == SUMMARY_SKIP}
    assert {dict(k[1])[R.T_DETECTOR] for k in skipped} == {"online_drift", "adversarial"}
    assert set(a) - skipped <= set(e)
    assert {k for k in e if k[0] in (R.WINDOW, R.QUALITY, R.DRIFT, R.DRIFT_SUMMARY, R.HISTOGRAM, R.PREDICTION)} <= set(
        a
    )
    for k, fe in e.items():
        if k not in a or k in skipped:
            continue
        fa = a[k]
        if k[0] in (R.WINDOW, R.QUALITY, R.HISTOGRAM, R.REFERENCE_HISTOGRAM):
            assert fa == fe, k
        elif k[0] in (R.DRIFT, R.DRIFT_SUMMARY) and "drift" in fe and "engine" in fe:
            assert fa["drift"] == fe["drift"], k
            for name in ("psi", "js"):
                if name in fe:
                    assert fa[name] == pytest.approx(fe[name], abs=1e-12)
        elif k[0] == R.PREDICTION and "drift" in fe:
            assert fa["drift"] == fe["drift"], k
            if "mean_window" in fe:
                assert fa["mean_window"] == pytest.approx(fe["mean_window"], rel=1e-9)
        elif k[0] == R.PREDICTION and "window_count" in fe:
            assert fa == fe, k
    assert a[(R.WINDOW, (("model", "m"), ("version", "1")))]["n_events"] == 5000


def test_a_pickled_summary_counts_the_same_in_another_process(setup, tmp_path):
    """The detector process gets summaries pickled: the categorical hash index (Python's string hashes are
    salted per process) is not pickled, so another process rebuilds it and counts the same columns."""
    import pickle

    rng, _, _, layout = setup
    w = make_frame(rng, 2000, unseen=("new",))
    s = summarise(layout, w)
    assert layout.categorical[0]._index  # built in this process
    blob = pickle.dumps((layout.summary(), w))
    assert pickle.loads(blob)[0].layout.categorical[0]._index == {}
    (tmp_path / "in.pkl").write_bytes(blob)
    code = (
        "import pickle, sys; s, w = pickle.load(open(sys.argv[1], 'rb')); s.update(w); "
        "sys.stdout.buffer.write(pickle.dumps(s.arrays['f.cat_counts']))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "in.pkl")],
        capture_output=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "7"},
    ).stdout
    assert np.array_equal(pickle.loads(out), s.arrays["f.cat_counts"])


@pytest.mark.parametrize("shift", [0.0, 1.0])
def test_the_summary_adapter_agrees_with_the_univariate_one(shift):
    """Under the detector contract (detectors.adapters), the summary's verdicts are the rows' verdicts."""
    from detectors.adapters import SummaryDriftDetector, UnivariateDetector
    from detectors.contract import EXAMPLE_FEATURES, example_frames

    ref, windows = example_frames(5, n_reference=3000, n_window=1500, windows=3, shift=shift)
    rows = UnivariateDetector(EXAMPLE_FEATURES).fit(ref)
    summ = SummaryDriftDetector(EXAMPLE_FEATURES, batch=400).fit(ref)
    for w in windows:
        a, b = rows.update(w), summ.update(w)
        assert a.drift == b.drift and a.threshold == b.threshold and a.n_window == b.n_window
        assert b.details["engine"] == "summary" and a.details["n_features"] == b.details["n_features"]
    assert b.drift == (shift > 0)


@pytest.mark.parametrize("law", ["normal", "student_t3", "lognormal", "integers", "two_values"])
def test_bin_lookup_equals_the_binary_search(law):
    """``NumericLayout.bin_index`` (a grid over the quantile edges) places every value where
    ``np.searchsorted(edges, v, side="right")`` does: edges themselves, ties, tails, values outside the
    reference's range, NaN and infinities."""
    import pickle

    from detectors.reference import quantile_edges
    from detectors.summaries import NumericLayout, fine_edges

    rng = np.random.default_rng(11)
    draw = {
        "normal": lambda n: rng.normal(0, 1, n),
        "student_t3": lambda n: rng.standard_t(3, n),
        "lognormal": lambda n: rng.lognormal(0, 1.5, n),
        "integers": lambda n: rng.integers(0, 400, n).astype(float),
        "two_values": lambda n: rng.choice([0.0, 1.0], n),
    }[law]
    ref = np.sort(draw(20_000))
    edges = fine_edges(ref, quantile_edges(ref, 10), 1024)
    nl = NumericLayout("x", edges, np.zeros(1), 1, np.zeros(1), np.zeros(1), 1.0)
    mid = (edges[:-1] + edges[1:]) / 2 if edges.size > 1 else edges
    probe = np.concatenate(
        [
            draw(100_000) * 1.3 + 0.2,  # a shifted window
            edges,
            np.nextafter(edges, -np.inf),
            np.nextafter(edges, np.inf),
            mid,
            [np.nan, np.inf, -np.inf, -1e300, 1e300, 0.0, -0.0],
        ]
    )
    expected = np.searchsorted(edges, probe, side="right")
    assert np.array_equal(nl.bin_index(probe), expected)
    if law in ("normal", "student_t3", "lognormal"):  # these have ~1,000 edges: the grid is used, not the search
        assert nl.__dict__["_lut"]
    copy = pickle.loads(pickle.dumps(nl))  # the table stays behind (rebuilt on first use)
    assert "_lut" not in copy.__dict__ and np.array_equal(copy.bin_index(probe), expected)


def test_npz_bytes_at_a_deflate_level_reads_back_like_savez_compressed():
    """Summaries are checkpointed deflated at level 1 (a third of the default level's CPU): the same arrays
    and header come back through ``npz_read``, the bytes are a few % larger than level 6's, never stored raw."""
    import zipfile
    from io import BytesIO

    from detectors.reference import npz_bytes, npz_read

    rng = np.random.default_rng(5)
    arrays = {"counts": rng.integers(0, 50, (15, 1026)), "sums": rng.normal(size=(15, 1026)).round(2)}
    fast, default = (npz_bytes(arrays, {"n": 3}, "f", 1, compress=c) for c in (1, True))
    for blob in (fast, default):
        meta, data = npz_read(blob, "f", 1, "thing", ValueError)
        assert meta["n"] == 3 and all(np.array_equal(data[k], v) for k, v in arrays.items())
    with zipfile.ZipFile(BytesIO(fast)) as z:
        assert {i.compress_type for i in z.infolist()} == {zipfile.ZIP_DEFLATED}
    assert len(default) < len(fast) < 1.3 * len(default) < len(npz_bytes(arrays, {}, "f", 1, compress=False))
    with pytest.raises(ValueError, match="deflate level"):
        npz_bytes(arrays, {}, "f", 1, compress=0)


def test_category_columns_from_codes_equal_the_row_by_row_lookup():
    """``CategoricalLayout.columns_of`` with the column's codes (its distinct values looked up once) gives the
    rows the same columns, presence and count of values outside ``allowed`` as hashing every row."""
    from detectors.frame import Codes
    from detectors.summaries import CategoricalLayout

    rng = np.random.default_rng(2)
    layout = CategoricalLayout(
        "c",
        np.array(["a", "b", "c"], dtype=object),
        8,
        np.zeros(11, dtype=np.int64),
        allowed=frozenset({"a", "b", "u1"}),
    )
    values = np.array(["a", "b", "c", None, "u1", "u2", "u3", "a"], dtype=object)  # a repeat, unseen values
    codes = rng.integers(0, values.shape[0], 5000)
    col = values[codes]
    by_row = layout.columns_of(col)
    by_value = layout.columns_of(col, Codes.distinct(col, codes, values))
    assert np.array_equal(by_row[0], by_value[0]) and np.array_equal(by_row[1], by_value[1])
    assert by_row[2] == by_value[2] == int(np.isin(col, ["c", "u2", "u3"]).sum())
