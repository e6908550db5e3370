"""The window runner: record shapes and tags, segments, privacy, the registry, error isolation."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from detectors import records as R
from detectors.records import Record
from detectors.reference import OTHER, Reference
from detectors.runner import (
    DataDrift,
    DataQuality,
    Histograms,
    WindowContext,
    WindowEvaluationError,
    WindowEvaluator,
    WindowStats,
    default_evaluators,
    evaluate_window,
    register,
)
from detectors.spec import DriftSpec, FeatureSpec, ThresholdSpec
from tests.detectors.drift_data import feature_specs, make_frame


def mine():
    """The evaluators of this module (the default list holds more, from other modules)."""
    return [WindowStats(), DataQuality(), DataDrift(), Histograms()]


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(23)


def _ctx(rng, *, shift=None, segments=(), specs=None, reference=True, n=1000, **kw):
    specs = specs or feature_specs()
    ref = (
        Reference.from_frame(make_frame(rng, 3000), specs, segments=segments, segment_top_k=2, min_segment_rows=100)
        if reference
        else None
    )
    frame = make_frame(rng, n, shift=shift, missing=0.02, t0=1_700_000_000.0)
    return WindowContext(
        model_id="iris",
        version="v2",
        frame=frame,
        reference=ref,
        features=specs,
        drift=DriftSpec(),
        task="classification",
        segments=segments,
        window_start=1_700_000_000.0,
        window_end=1_700_000_010.5,
        **kw,
    )


def test_records_of_a_drifting_window(rng):
    ctx = _ctx(rng, shift={"x3": 0.5})
    recs = evaluate_window(ctx, mine())
    kinds = Counter(r.measurement for r in recs)
    assert kinds == {
        R.WINDOW: 1,
        R.DRIFT: 20,
        R.DRIFT_SUMMARY: 1,
        R.QUALITY: 20,
        R.HISTOGRAM: 20,
        R.REFERENCE_HISTOGRAM: 20,
    }
    assert all(r.time_ns == 1_700_000_010_500_000_000 for r in recs)
    win = next(r for r in recs if r.measurement == R.WINDOW)
    assert win.tags == {"model": "iris", "version": "v2"}
    assert win.fields["n_events"] == 1000 and win.fields["duration"] == pytest.approx(10.5)
    assert win.fields["events_per_s"] == pytest.approx(1000 / 10.5)
    assert win.fields["n_missing_cells"] > 0
    summary = next(r for r in recs if r.measurement == R.DRIFT_SUMMARY)
    assert summary.tags == {"model": "iris", "version": "v2", "detector": "univariate"}
    assert summary.fields["drift"] == 1 and summary.fields["top_feature"] == "x3"
    assert summary.fields["correction"] == "bonferroni" and summary.fields["n_features"] == 20
    assert summary.fields["share_drifted"] == summary.fields["n_drifted"] / 20
    drift = {r.tags["feature"]: r for r in recs if r.measurement == R.DRIFT}
    x3 = drift["x3"]
    assert x3.tags == {"model": "iris", "version": "v2", "feature": "x3", "detector": "ks"}
    assert x3.fields["drift"] == 1 and x3.fields["rank"] == 1
    assert x3.fields["threshold"] == pytest.approx(0.05 / 20)
    assert set(x3.fields) - {"band_lower", "band_upper", "threshold_note", "effect_band"} == {
        "statistic",
        "p_value",
        "threshold",
        "drift",
        "psi",
        "js",
        "wasserstein",
        "n_ref",
        "n_cur",
        "rank",
        "engine",
        "window_start",
        "threshold_method",
        "judged",
        "effect",
        "effect_floor",
    }
    assert (
        x3.fields["threshold_method"] == summary.fields["threshold_method"]
        or x3.fields["threshold_method"] == "p_and_effect"
    )  # the chunk methods' fallback on a short reference
    assert "band_lower" in x3.fields or "band_upper" in x3.fields  # every verdict stores its band
    assert drift["c1"].tags["detector"] == "chi2" and "wasserstein" not in drift["c1"].fields
    assert sorted(r.fields["rank"] for r in drift.values()) == list(range(1, 21))
    q = next(r for r in recs if r.measurement == R.QUALITY and r.tags["feature"] == "x0")
    assert q.fields["n"] == 1000 and 0 < q.fields["missing_rate"] < 0.05


def test_field_types_are_stable_and_finite(rng):
    """InfluxDB fixes a field's type on first write: ints stay ints, floats stay floats."""
    recs = evaluate_window(_ctx(rng), mine()) + evaluate_window(_ctx(rng, shift={"x0": 2.0}), mine())
    types: dict[tuple[str, str], set[type]] = {}
    for r in recs:
        for k, v in r.fields.items():
            types.setdefault((r.measurement, k), set()).add(type(v))
            assert not (isinstance(v, float) and not np.isfinite(v)), (r.measurement, k)
            assert isinstance(v, (int, float, str, bool)) and not isinstance(v, np.generic)
    assert all(len(t) == 1 for t in types.values()), {k: t for k, t in types.items() if len(t) > 1}


def test_no_raw_values_in_records(rng):
    ctx = _ctx(rng)
    recs = evaluate_window(ctx, mine())
    raw = set(np.round(ctx.frame.numeric["x0"][:200], 12)) - {np.nan}
    for r in recs:
        for v in r.fields.values():
            if isinstance(v, float):
                assert round(v, 12) not in raw
    labels = {v for r in recs for k, v in r.fields.items() if k.startswith("l")}
    assert labels <= set(ctx.reference.categorical["c0"].top.tolist()) | {OTHER} | {
        lab for c in ctx.reference.categorical.values() for lab in c.top.tolist()
    }


def test_segments_are_tagged_and_bounded(rng):
    ctx = _ctx(rng, segments=("c0",))
    recs = evaluate_window(ctx)
    segs = Counter(r.tags.get("segment") for r in recs if r.measurement == R.DRIFT_SUMMARY)
    assert segs == {None: 1, "c0=cat_0": 1, "c0=cat_1": 1, f"c0={OTHER}": 1}
    assert all("segment" not in r.tags for r in recs if r.measurement == R.WINDOW)
    seg_q = next(
        r
        for r in recs
        if r.measurement == R.QUALITY
        and r.tags == {"model": "iris", "version": "v2", "segment": "c0=cat_1", "feature": "x0"}
    )
    assert seg_q.fields["n"] == int((ctx.frame.categorical["c0"] == "cat_1").sum())


def test_small_segments_are_skipped(rng):
    ctx = _ctx(rng, segments=("c0",), n=150)  # cat_1 has ~30 rows < min_segment_rows
    segs = {r.tags.get("segment") for r in evaluate_window(ctx) if r.measurement == R.DRIFT_SUMMARY}
    assert "c0=cat_1" not in segs and None in segs


def test_without_reference_only_counts_and_quality(rng):
    recs = evaluate_window(_ctx(rng, reference=False), mine())
    assert {r.measurement for r in recs} == {R.WINDOW, R.QUALITY}


def test_sensitive_features_are_noised_or_withheld(rng):
    specs = feature_specs(2, 1)
    specs = (specs[0].model_copy(update={"sensitive": True}),) + specs[1:]
    ctx = _ctx(rng, specs=specs)
    hist = Histograms(epsilon=0.5, rng=np.random.default_rng(1))
    recs = evaluate_window(ctx, [hist])
    x0 = [r for r in recs if r.tags["feature"] == "x0"]
    assert {r.measurement for r in x0} == {R.HISTOGRAM, R.REFERENCE_HISTOGRAM}
    for r in x0:
        assert r.fields["noised"] == 1 and r.fields["epsilon"] == 0.5
        assert not any(k.startswith("e") and k[1:].isdigit() for k in r.fields)
    x1 = next(r for r in recs if r.tags["feature"] == "x1" and r.measurement == R.HISTOGRAM)
    assert x1.fields["noised"] == 0 and "e01" in x1.fields and "e00" not in x1.fields
    # the reference is noised once per reference object, not per window
    again = evaluate_window(ctx, [hist])
    ref1 = [r.fields for r in recs if r.measurement == R.REFERENCE_HISTOGRAM and r.tags["feature"] == "x0"]
    ref2 = [r.fields for r in again if r.measurement == R.REFERENCE_HISTOGRAM and r.tags["feature"] == "x0"]
    assert ref1 == ref2
    withheld = evaluate_window(ctx, [Histograms(sensitive="withhold")])
    assert not [r for r in withheld if r.tags["feature"] == "x0"]


def test_register_and_error_isolation(rng):
    class Count:
        name = "count"
        segmented = False

        def evaluate(self, ctx):
            return [ctx.record("dw_test", ctx.tags(), {"n": len(ctx.frame)})]

    class Broken:
        name = "broken"
        segmented = True

        def evaluate(self, ctx):
            raise RuntimeError("boom")

    registry = [WindowStats()]
    register(Count(), registry)
    register(Count(), registry)  # same name replaces
    assert [e.name for e in registry] == ["window", "count"]
    with pytest.raises(TypeError):
        register(object(), registry)
    ctx = _ctx(rng, segments=("c0",))
    recs = evaluate_window(ctx, registry)
    assert next(r for r in recs if r.measurement == "dw_test").fields == {"n": 1000}
    with pytest.raises(WindowEvaluationError, match="broken") as e:
        evaluate_window(ctx, registry + [Broken()])
    assert len(e.value.records) == len(recs)  # the others' results are kept
    assert {seg for _, seg, _ in e.value.errors} == {None, "c0=cat_0", "c0=cat_1", f"c0={OTHER}"}


def test_default_evaluators_and_engine_choice(rng):
    # the built-in four come first, in this order; the advanced and adversarial ones after them
    evaluators = default_evaluators()
    names = [e.name for e in evaluators]
    assert names[:4] == ["window", "quality", "data_drift", "histograms"]
    assert [type(e) for e in evaluators[:4]] == [WindowStats, DataQuality, DataDrift, Histograms]
    assert len(set(names)) == len(names), names
    assert all(isinstance(e, WindowEvaluator) for e in evaluators)
    assert {
        "adversarial",
        "prediction_drift",
        "multivariate_drift",
        "estimated_performance",
        "feature_impact",
        "online_drift",
    } <= set(names[4:])
    ctx = _ctx(rng, specs=feature_specs(3, 1))
    ctx_alibi = WindowContext(**{**ctx.__dict__, "drift": DriftSpec(engine="alibi"), "cache": {}})
    a = {r.tags["feature"]: r.fields for r in DataDrift().evaluate(ctx) if r.measurement == R.DRIFT}
    b = {r.tags["feature"]: r.fields for r in DataDrift().evaluate(ctx_alibi) if r.measurement == R.DRIFT}
    assert a.keys() == b.keys() and all(b[k]["engine"] == "alibi" for k in b)
    for k in a:
        assert a[k]["statistic"] == pytest.approx(b[k]["statistic"], rel=2e-6)
        assert a[k]["drift"] == b[k]["drift"]


def test_each_factory_call_builds_its_own_state(rng):
    """Per-model state (here the adversarial monitors, fitted during warm-up) belongs to the list that
    built it: a second list, as another worker or test would build, starts empty."""
    import detectors.runner as runner

    assert not hasattr(runner, "EVALUATORS")  # no module-level registry to leak through
    first, second = default_evaluators(), default_evaluators()
    adv1 = next(e for e in first if e.name == "adversarial")
    adv2 = next(e for e in second if e.name == "adversarial")
    assert adv1 is not adv2
    from detectors.adversarial.spec import AdversarialSpec

    spec = AdversarialSpec(warmup_events=500)
    for _ in range(2):
        evaluate_window(_ctx(rng, reference=False, n=400, adversarial=spec), first)
    assert adv1.monitor("iris", "v2") is not None  # warmed up on the first list's windows
    assert adv2.monitor("iris", "v2") is None
    online1 = next(e for e in first if e.name == "online_drift")
    online2 = next(
        e for e in default_evaluators(online_cache_dir="/tmp/x", online_background=True) if e.name == "online_drift"
    )
    assert (online1.cache_dir, online1.background) == (None, False)
    assert (online2.cache_dir, online2.background) == ("/tmp/x", True)


def test_quality_is_shared_between_evaluators(rng):
    ctx = _ctx(rng)
    WindowStats().evaluate(ctx)
    cached = ctx.cache["quality"]
    DataQuality().evaluate(ctx)
    assert ctx.cache["quality"] is cached
    assert isinstance(DataQuality().evaluate(ctx)[0], Record)


def test_feature_spec_order_and_unknown_features(rng):
    specs = feature_specs(2, 1)
    ctx = _ctx(rng, specs=specs)
    extra = specs + (FeatureSpec(name="new_feature", kind="numeric"),)
    ctx2 = WindowContext(**{**ctx.__dict__, "features": extra, "cache": {}})
    recs = evaluate_window(ctx2, mine())
    # not in the reference: quality only (all missing), no drift or histogram
    assert {r.measurement for r in recs if r.tags.get("feature") == "new_feature"} == {R.QUALITY}


def test_segments_get_their_own_reference_chunks(rng):
    """A segment's sub-reference is given its rows (the parent's rows of that segment), so its
    features are judged against the segment's own chunks instead of falling back."""
    from detectors.reference import attach_reference_frame, reference_frame

    specs = feature_specs()
    rows = make_frame(rng, 12_000)
    ref = attach_reference_frame(
        Reference.from_frame(rows, specs, segments=("c0",), segment_top_k=2, min_segment_rows=100), rows
    )
    ctx = WindowContext(
        model_id="iris",
        version="v2",
        frame=make_frame(rng, 600, t0=1_700_000_000.0),
        reference=ref,
        features=specs,
        drift=DriftSpec(threshold=ThresholdSpec(method="both")),
        segments=("c0",),
        window_start=1_700_000_000.0,
        window_end=1_700_000_010.0,
    )
    recs = evaluate_window(ctx)
    seg = [r for r in recs if r.measurement == R.DRIFT and r.tags.get("segment") == "c0=cat_0"]
    methods = {r.tags["feature"]: r.fields["threshold_method"] for r in seg}
    # not the p_and_effect fallback; only the segment's own feature (one value inside it) has no chunk values
    assert methods.pop("c0") == "p_and_effect" and set(methods.values()) == {"both"}
    sub = ref.segments["c0=cat_0"]
    sub_rows = reference_frame(sub)
    assert len(sub_rows) == sub.n_rows == int((rows.categorical["c0"] == "cat_0").sum())


def test_without_reference_points_a_window_leaves_out_only_those(rng):
    """``reference_points=False`` (the worker's windows that only repeat them): no reference histograms and
    no feature impacts; every other point as with them."""
    from detectors.reference import attach_reference_frame

    specs = feature_specs()
    rows = make_frame(rng, 2000)
    ref = attach_reference_frame(Reference.from_frame(rows, specs), rows)
    frame = make_frame(rng, 1000, t0=1_700_000_000.0)
    from types import SimpleNamespace

    declared = SimpleNamespace(declared={specs[0].name: 2.0, specs[1].name: 1.0})  # impacts without a fit
    base = dict(
        model_id="m", version="1", frame=frame, reference=ref, features=specs, window_end=1.7e9, impact=declared
    )

    def points(ctx):
        return {(r.measurement, tuple(sorted(r.tags.items()))): r.fields for r in evaluate_window(ctx)}

    full = points(WindowContext(**base))
    thin = points(WindowContext(**base, reference_points=False))
    assert {k[0] for k in full} >= {R.REFERENCE_HISTOGRAM, R.IMPACT, R.HISTOGRAM, R.DRIFT}
    assert {k for k in full if k[0] not in (R.REFERENCE_HISTOGRAM, R.IMPACT)} == set(thin)
    assert all(full[k] == thin[k] for k in thin)


def test_prepare_fits_ahead_only_what_the_windows_will_run(rng):
    """``prepare_evaluators``: the adversarial monitor is fitted from the reference rows alone (an empty frame),
    not for summarised windows (the adversarial evaluator does not run on them), and a failing prepare is
    returned, not raised."""
    from detectors.reference import attach_reference_frame
    from detectors.runner import NEEDS_EVERY_ROW, prepare_evaluators

    specs = feature_specs()
    rows = make_frame(rng, 2000)
    ref = attach_reference_frame(Reference.from_frame(rows, specs), rows)
    empty = make_frame(rng, 0)
    ctx = WindowContext(model_id="m", version="1", frame=empty, reference=ref, features=specs)

    class Broken:
        name, segmented = "broken", False

        def prepare(self, ctx):
            raise RuntimeError("no")

        def evaluate(self, ctx):  # pragma: no cover - not called here
            return []

    summarised = default_evaluators()
    assert prepare_evaluators(ctx, summarised, summarised=True) == []
    adv = next(e for e in summarised if e.name == "adversarial")
    assert "adversarial" in NEEDS_EVERY_ROW and adv.monitor("m", "1") is None
    rows_kind = [*default_evaluators(), Broken()]
    errors = prepare_evaluators(ctx, rows_kind)
    assert [(name, str(e)) for name, e in errors] == [("broken", "no")]
    assert next(e for e in rows_kind if e.name == "adversarial").monitor("m", "1") is not None
