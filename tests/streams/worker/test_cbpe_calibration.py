"""CBPE calibrated through the worker's pipeline: on a labelled reference file, or on the first joined labels.

In-process pipeline (fake sink, the real detectors inline): until enough labelled rows exist, the CBPE
point of a window says "not calibrated" and has no value; after, it is an estimate with a band, and the
realized accuracy points carry CBPE's estimate of the same labelled rows and the estimation error
(checked against a direct numpy computation).
"""

from __future__ import annotations

import asyncio

import numpy as np
import orjson
import pandas as pd

from detectors import records as R
from detectors.performance import fit_calibration
from streams.settings import Settings
from streams.worker.deadletter import DeadLetterPublisher
from streams.worker.decode import RawMessage
from streams.worker.evaluation import default_evaluator
from streams.worker.labels import LabelHook
from streams.worker.monitors import parse_monitors
from streams.worker.pipeline import Pipeline
from tests.streams.worker.test_pipeline import T0, FakeSink, dl_sender

N = 100  # events per message (one window each)


def _events(rng, start: int, n: int):
    """A logistic model whose probabilities are over-confident (p ** 0.3): true P(yes) = p, served p ** 0.3."""
    x = rng.normal(size=n)
    p = 1 / (1 + np.exp(-x))
    served = np.clip(p**0.3, 0, 1)
    truth = np.where(rng.random(n) < p, "yes", "no")
    pred = np.where(served >= 0.5, "yes", "no")
    return x, served, pred, truth


def _msg(start, x, served, pred, offset):
    n = len(x)
    doc = {
        "type": "inference_batch",
        "model_id": "m",
        "event_id": [f"e{start + i}" for i in range(n)],
        "event_time": (T0 + np.arange(start, start + n) * 0.1).tolist(),
        "features": {"x": x.tolist()},
        "prediction": {"label": pred.tolist(), "probabilities": {"yes": served.tolist(), "no": (1 - served).tolist()}},
    }
    return RawMessage(orjson.dumps(doc), b"m", "t", 0, offset, int((T0 + 1e5) * 1000))


def _labels(start, truth, offset):
    return RawMessage(
        orjson.dumps(
            {
                "type": "label_batch",
                "model_id": "m",
                "event_id": [f"e{start + i}" for i in range(len(truth))],
                "label": truth.tolist(),
                "label_time": [T0 + 500.0] * len(truth),
            }
        ),
        b"m",
        "labels",
        0,
        offset,
        None,
    )


def _cfg(reference: dict, labels_section: bool = True):
    model = {
        "model_id": "m",
        "features": [{"name": "x", "kind": "numeric"}],
        "window": {"size_events": N},
        "reference": reference,
        "performance": {"calibration_rows": 400, "min_calibration_rows": 200},
    }
    if labels_section:  # without one, the join holds predictions from the first label on (but see below)
        model["labels"] = {"ttl_seconds": 3600, "online": {"enabled": False}}
    return parse_monitors({"models": [model]})


def _cbpe(sink):
    return [
        r
        for r in sink.records
        if r.measurement == R.PERFORMANCE and r.tags[R.T_DETECTOR] == "cbpe" and r.tags[R.T_METRIC] == "accuracy"
    ]


def _run(cfg, windows: int, labelled_until: int, label_lag: int = 0, flip_every: int = 0, flip_from: int = 0):
    """``flip_every`` > 0: from window ``flip_from`` on, every other block of that many windows gets labels
    that contradict every prediction (the same inputs, other outcomes: a concept that keeps flipping)."""
    rng = np.random.default_rng(11)
    hook = LabelHook(cfg, background=False)
    sink = FakeSink()
    p = Pipeline(
        Settings(),
        cfg,
        sink=sink,
        deadletters=DeadLetterPublisher(dl_sender([])),
        evaluator=default_evaluator(),
        label_hook=hook,
    )
    data = [_events(rng, k * N, N) for k in range(windows)]
    if flip_every:
        for k in range(flip_from, windows):
            if (k - flip_from) // flip_every % 2 == 0:
                x, served, pred, _truth = data[k]
                data[k] = (x, served, pred, np.where(pred == "yes", "no", "yes"))

    async def go():
        off = 0
        for k, (x, served, pred, _truth) in enumerate(data):
            await p.process([_msg(k * N, x, served, pred, off)])
            off += 1
            j = k - label_lag  # the labels of window j arrive before window k + 1 (label_lag windows late)
            if 0 <= j < labelled_until:
                await p.process([_labels(j * N, data[j][3], off)])
                off += 1
        await p.drain()

    asyncio.run(go())
    return sink, data, hook


def test_first_joined_labels_calibrate_cbpe_and_it_says_not_calibrated_until_then():
    sink, data, _hook = _run(_cfg({"first_n": 100}), windows=8, labelled_until=8)
    pts = _cbpe(sink)
    assert pts, "no CBPE points"
    early = [r for r in pts if "value" not in r.fields]
    late = [r for r in pts if "value" in r.fields]
    assert early and all(
        r.fields["status"] == "not calibrated" and "waiting for labels" in r.fields["reason"] for r in early
    )
    assert late and all(r.fields["calibrated"] for r in late)
    assert max(r.time_ns for r in early) < min(r.time_ns for r in late)
    # the estimate of the last window equals a direct computation with the calibration on the first 400 rows
    served = np.concatenate([d[1] for d in data])
    pred = np.concatenate([d[2] for d in data])
    truth = np.concatenate([d[3] for d in data])
    P = np.column_stack([1 - served, served])
    cal = fit_calibration(P[:400], truth[:400].astype(object), ("no", "yes"), pred[:400].astype(object))
    q = cal.apply(P[-N:])
    direct = np.mean(np.where(pred[-N:] == "yes", q[:, 1], q[:, 0]))
    assert abs(late[-1].fields["value"] - direct) < 1e-9
    assert (
        late[-1].fields["calibration_n"] == 400 and late[-1].fields["calibration_source"] == "first 400 joined labels"
    )
    # uncalibrated, the model's own confidence says ~0.9; the realized accuracy is far lower
    realized = [
        r
        for r in sink.records
        if r.measurement == R.PERFORMANCE and r.tags[R.T_DETECTOR] == "realized" and r.tags[R.T_METRIC] == "accuracy"
    ]
    with_est = [r for r in realized if "estimation_error" in r.fields]
    assert with_est
    for r in with_est:
        assert abs(r.fields["cbpe_value"] - r.fields["value"]) == r.fields["estimation_error"]
    errs = [r.fields["estimation_error"] for r in with_est]
    assert np.mean(errs) < 0.08  # windows of 100 labels: sampling noise ~0.045
    raw_gap = np.mean(np.where(pred == "yes", served, 1 - served)) - np.mean(pred == truth)
    assert raw_gap > 0.1


def test_a_labelled_reference_file_calibrates_from_the_first_window(tmp_path):
    rng = np.random.default_rng(5)
    x, served, pred, truth = _events(rng, 0, 1000)
    path = tmp_path / "ref.csv"
    pd.DataFrame({"x": x, "yhat": pred, "p_yes": served, "p_no": 1 - served, "y": truth}).to_csv(path, index=False)
    cfg = _cfg({"file": str(path), "prediction": "yhat", "probabilities": {"yes": "p_yes", "no": "p_no"}, "label": "y"})
    sink, data, _hook = _run(cfg, windows=3, labelled_until=0)
    pts = _cbpe(sink)
    assert len(pts) == 3 and all(r.fields["calibrated"] and r.fields["calibration_n"] == 1000 for r in pts)
    assert all(r.fields["lower"] <= r.fields["value"] <= r.fields["upper"] for r in pts)
    realized = [np.mean(d[2] == d[3]) for d in data]
    assert np.mean([abs(r.fields["value"] - a) for r, a in zip(pts, realized)]) < 0.08
    # prediction drift and impact ran against the file (it carries the outputs)
    status = {r.tags[R.T_DETECTOR]: r.fields["computed"] for r in sink.records if r.measurement == R.STATUS}
    assert status == {"prediction_drift": 1, "feature_impact": 1, "estimated_performance": 1}
    assert any(r.measurement == R.PREDICTION for r in sink.records)
    assert any(r.measurement == R.IMPACT for r in sink.records)


def _direct_estimate(data, rows: slice, window: int) -> float:
    """CBPE's accuracy of ``window`` calibrated on ``rows``, computed directly (isotonic map + numpy)."""
    served = np.concatenate([d[1] for d in data])
    pred = np.concatenate([d[2] for d in data])
    truth = np.concatenate([d[3] for d in data])
    P = np.column_stack([1 - served, served])
    cal = fit_calibration(P[rows], truth[rows].astype(object), ("no", "yes"), pred[rows].astype(object))
    w = slice(window * N, (window + 1) * N)
    q = cal.apply(P[w])
    return float(np.mean(np.where(pred[w] == "yes", q[:, 1], q[:, 0])))


def test_cbpe_calibrates_on_the_first_predictions_even_when_labels_start_later():
    """No ``labels:`` section and labels three windows late: the join still holds the model's first
    ``calibration_rows`` predictions (it has probabilities), so CBPE calibrates on rows 0–399 — the
    reference period's own, NannyML's reference — not on the first rows joined after the first label."""
    cfg = _cfg({"first_n": 400}, labels_section=False)
    sink, data, hook = _run(cfg, windows=10, labelled_until=10, label_lag=3)
    pts = [r for r in _cbpe(sink) if "value" in r.fields]
    assert pts and pts[-1].fields["calibration_n"] == 400
    assert pts[-1].fields["calibration_source"] == "first 400 joined labels"
    assert abs(pts[-1].fields["value"] - _direct_estimate(data, slice(0, 400), 9)) < 1e-9
    assert abs(pts[-1].fields["value"] - _direct_estimate(data, slice(300, 700), 9)) > 1e-6  # the rows matter
    # every window's labels joined, the first ones too (held from before the first label)
    realized = [
        r
        for r in sink.records
        if r.measurement == R.PERFORMANCE and r.tags[R.T_DETECTOR] == "realized" and r.tags[R.T_METRIC] == "accuracy"
    ]
    first_window = min(r.time_ns for r in sink.records if r.measurement == R.WINDOW)
    assert any(r.time_ns == first_window and r.fields["n"] == N for r in realized)
    stats = hook._joins["m"].stats
    assert stats.predictions == 10 * N and stats.matched == 7 * N


def test_before_the_first_label_only_calibration_rows_predictions_are_held():
    """Without a label yet, the join holds at most ``calibration_rows`` predictions (memory), and none of a
    model whose events carry no probabilities (CBPE cannot use them)."""
    cfg = _cfg({"first_n": 100}, labels_section=False)
    _sink, _data, hook = _run(cfg, windows=7, labelled_until=0)
    assert hook._joins["m"].stats.predictions == 400  # calibration_rows, not 700
    assert hook._joins["m"].stats.pending_predictions == 400
    no_proba = LabelHook(cfg, background=False)
    rng = np.random.default_rng(1)
    x, served, pred, _truth = _events(rng, 0, N)
    doc = orjson.loads(_msg(0, x, served, pred, 0).value)
    del doc["prediction"]["probabilities"]
    p = Pipeline(
        Settings(),
        cfg,
        sink=FakeSink(),
        deadletters=DeadLetterPublisher(dl_sender([])),
        evaluator=None,
        label_hook=no_proba,
    )

    async def go():
        await p.process([RawMessage(orjson.dumps(doc), b"m", "t", 0, 0, None)])
        await p.drain()

    asyncio.run(go())
    assert "m" not in no_proba._joins


def test_a_concept_that_keeps_flipping_is_reported_as_concept_unstable():
    """The labels contradict every prediction in every other two windows after the first calibration: the
    worker's CBPE points say "not calibrated" with a reason that starts "concept unstable" and no value (the
    label join's collector, through the pipeline and the real evaluator)."""
    cfg = _cfg({"first_n": 100})
    sink, _data, hook = _run(cfg, windows=30, labelled_until=30, label_lag=1, flip_every=2, flip_from=6)
    pts = sorted(_cbpe(sink), key=lambda r: r.time_ns)
    unstable = [r for r in pts if str(r.fields.get("reason", "")).startswith("concept unstable: ")]
    assert unstable and all("value" not in r.fields and r.fields["status"] == "not calibrated" for r in unstable)
    first = pts.index(unstable[0])
    # the back-off: the second recalibration may publish once it held on 200 new labels (at most one window
    # here); after the third, 400 are asked of every calibration, and none holds that long
    assert sum("value" in r.fields for r in pts[first:]) <= 1
    assert all(r in unstable for r in pts[-15:])
    col = hook._cal_rows["m"]
    assert col.recalibrations >= 4 and col.unstable and col.need == 400  # backed off to calibration_rows
    assert f"{col.recalibrations} recalibrations in all" in unstable[-1].fields["reason"]
