"""Realized metrics vs scikit-learn; CBPE vs a hand computation and vs realized accuracy."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, log_loss, mean_absolute_error, mean_squared_error
from sklearn.metrics import precision_recall_fscore_support

from detectors.performance import (
    CBPE,
    PerformanceAccumulator,
    classification_metrics,
    normalize_labels,
    performance_records,
    regression_metrics,
)
from detectors.records import PERFORMANCE

CLASSES = ("a", "b", "c")


def _calibrated(rng, n, k=3, conc=1.0):
    p = rng.dirichlet([conc] * k, n)
    y = (rng.random(n)[:, None] > np.cumsum(p, axis=1)).sum(axis=1)  # y ~ Categorical(p)
    return p, np.array(CLASSES[:k], dtype=object)[y]


def test_classification_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    p, y = _calibrated(rng, 700)
    pred = np.array(CLASSES, dtype=object)[p.argmax(1)]
    m = classification_metrics(y, pred, p, CLASSES)
    pr, rc, f1, _ = precision_recall_fscore_support(y, pred, average="macro", zero_division=0)
    assert m["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert (m["precision"], m["recall"], m["f1"]) == pytest.approx((pr, rc, f1))
    assert m["log_loss"] == pytest.approx(log_loss(y, p, labels=list(CLASSES)), rel=1e-9)


def test_accumulator_is_additive_and_merges():
    rng = np.random.default_rng(1)
    p, y = _calibrated(rng, 500)
    pred = np.array(CLASSES, dtype=object)[p.argmax(1)]
    whole = classification_metrics(y, pred, p, CLASSES)
    a, b = PerformanceAccumulator(), PerformanceAccumulator()
    a.add(y[:123], pred[:123], p[:123], CLASSES)
    b.add(y[123:], pred[123:], p[123:], CLASSES)
    a.merge(b)
    assert a.metrics() == pytest.approx(whole)


def test_class_missing_from_predictions_counts_zero_like_sklearn():
    y = np.array(["a", "b", "c", "c"], dtype=object)
    pred = np.array(["a", "b", "b", "b"], dtype=object)
    m = classification_metrics(y, pred)
    pr, rc, f1, _ = precision_recall_fscore_support(y, pred, average="macro", zero_division=0)
    assert (m["precision"], m["recall"], m["f1"]) == pytest.approx((pr, rc, f1))


def test_regression_metrics_match_sklearn():
    rng = np.random.default_rng(2)
    t, p = rng.normal(size=300), rng.normal(size=300)
    t[5] = np.nan
    ok = np.isfinite(t)
    m = regression_metrics(t, p)
    assert m["mae"] == pytest.approx(mean_absolute_error(t[ok], p[ok]))
    assert m["rmse"] == pytest.approx(np.sqrt(mean_squared_error(t[ok], p[ok])))
    assert m["bias"] == pytest.approx(np.mean(p[ok] - t[ok]))


def test_labels_normalised_like_the_decoder():
    assert normalize_labels([True, False, 1, 1.0, "1", None]).tolist() == ["true", "false", "1", "1", "1", None]
    m = classification_metrics(np.array([1, 0, True], dtype=object), np.array(["1", "0", "true"], dtype=object))
    assert m["accuracy"] == 1.0


def test_cbpe_equals_hand_computation():
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.3, 0.3, 0.4], [0.5, 0.4, 0.1]])
    est = CBPE().estimate(p, CLASSES)
    pred = p.argmax(1)
    # expected confusion E[C[i, j]] = sum_n P_n(i) [pred_n = j]
    c = np.zeros((3, 3))
    for n in range(4):
        c[:, pred[n]] += p[n]
    tp = np.diag(c)
    prec = tp / c.sum(0)
    rec = tp / c.sum(1)
    f1 = 2 * tp / (c.sum(0) + c.sum(1))
    assert est["accuracy"] == pytest.approx(p.max(1).mean())
    assert est["precision"] == pytest.approx(np.mean(prec))
    assert est["recall"] == pytest.approx(np.mean(rec))
    assert est["f1"] == pytest.approx(np.mean(f1))
    assert est["log_loss"] == pytest.approx(np.mean(-(p * np.log(p)).sum(1)))
    assert est["accuracy_std"] == pytest.approx(np.sqrt(np.sum(p.max(1) * (1 - p.max(1)))) / 4)


def test_cbpe_tracks_realized_performance_on_calibrated_data():
    rng = np.random.default_rng(3)
    for conc in (0.3, 1.0, 3.0):  # easy .. hard windows
        p, y = _calibrated(rng, 2000, conc=conc)
        est = CBPE().estimate(p, CLASSES)
        real = classification_metrics(y, np.array(CLASSES, dtype=object)[p.argmax(1)], p, CLASSES)
        assert abs(est["accuracy"] - real["accuracy"]) < 3 * est["accuracy_std"]
        assert est["f1"] == pytest.approx(real["f1"], abs=0.04)
        assert est["log_loss"] == pytest.approx(real["log_loss"], abs=0.06)


def test_cbpe_calibration_fixes_overconfidence():
    rng = np.random.default_rng(4)
    p_true, y = _calibrated(rng, 4000, k=2)
    over = p_true ** 3 / (p_true ** 3).sum(1, keepdims=True)  # overconfident scores
    raw = CBPE().estimate(over[2000:], CLASSES[:2])
    cal = CBPE().fit_calibration(over[:2000], y[:2000], CLASSES[:2]).estimate(over[2000:], CLASSES[:2])
    real = classification_metrics(y[2000:], np.array(CLASSES[:2], dtype=object)[over[2000:].argmax(1)])
    assert abs(cal["accuracy"] - real["accuracy"]) < abs(raw["accuracy"] - real["accuracy"])
    assert abs(cal["accuracy"] - real["accuracy"]) < 0.03


def test_performance_records():
    recs = performance_records({"accuracy": 0.9, "accuracy_std": 0.01, "f1": float("nan"), "n": 10},
                               {"model": "m"}, 7, estimated=True)
    assert [r.tags["metric"] for r in recs] == ["accuracy"]
    r = recs[0]
    assert r.measurement == PERFORMANCE and r.tags["detector"] == "cbpe" and r.time_ns == 7
    assert r.fields == {"value": 0.9, "estimated": True, "n": 10, "std": 0.01}
    recs = performance_records({"mae": 1.5}, {"model": "m"}, 7, estimated=False, n=3,
                               extra={"n_labels": 3, "label_coverage": 0.5})
    assert recs[0].tags["detector"] == "realized" and recs[0].fields["label_coverage"] == 0.5
