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


def _cfg(reference: dict):
    return parse_monitors(
        {
            "models": [
                {
                    "model_id": "m",
                    "features": [{"name": "x", "kind": "numeric"}],
                    "window": {"size_events": N},
                    "reference": reference,
                    "performance": {"calibration_rows": 400, "min_calibration_rows": 200},
                    "labels": {"ttl_seconds": 3600, "online": {"enabled": False}},
                }
            ]
        }
    )


def _cbpe(sink):
    return [
        r
        for r in sink.records
        if r.measurement == R.PERFORMANCE and r.tags[R.T_DETECTOR] == "cbpe" and r.tags[R.T_METRIC] == "accuracy"
    ]


def _run(cfg, windows: int, labelled_until: int):
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

    async def go():
        off = 0
        for k, (x, served, pred, truth) in enumerate(data):
            await p.process([_msg(k * N, x, served, pred, off)])
            off += 1
            if k < labelled_until:  # the labels of this window arrive before the next one
                await p.process([_labels(k * N, truth, off)])
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
