"""Raw feature values never leave the worker; sensitive features are noised (DP) or withheld.

The end-to-end test sends sentinel values — a numeric value and a category in
ordinary features (once, in a monitored window), and values that dominate the
*reference* of sensitive features (so, unprotected, they would become quantile
edges or top-category labels) — plus a sentinel event id, runs the real worker
with an alert rule that fires on every window (webhook receiver + alerts topic),
and then searches every point in InfluxDB, every alert (webhook bodies and the
alerts topic) and the worker's log for them.
"""

from __future__ import annotations

import time

import numpy as np
import orjson
import pytest
import yaml
from scipy import stats

from detectors.spec import FeatureSpec

SENT_X0 = 987654.321  # ordinary numeric feature, once in a monitored window
SENT_C0 = "SENTINEL-c0-q8z"  # ordinary categorical feature, once
SENT_X1 = 31337.125  # sensitive numeric (noised): half of its reference values
SENT_C1 = "SENTINEL-c1-k2w"  # sensitive categorical (withheld): most of its reference values
SENT_EID = "SENTINEL-eid-77"
SENTINELS = [repr(SENT_X0), "987654.3", repr(SENT_X1), "31337.1", SENT_C0, SENT_C1, SENT_EID]


def test_feature_epsilon_config():
    assert FeatureSpec(name="x", kind="numeric").dp_epsilon == 1.0
    assert FeatureSpec(name="x", kind="numeric", sensitive=True, dp_epsilon=None).dp_epsilon is None
    with pytest.raises(ValueError):
        FeatureSpec(name="x", kind="numeric", dp_epsilon=0)
    from streams.worker.monitors import ConfigError, parse_monitors

    with pytest.raises(ConfigError, match="sensitive feature"):
        parse_monitors(
            {
                "models": [
                    {
                        "model_id": "m",
                        "segments": ["c"],
                        "features": [{"name": "c", "kind": "categorical", "sensitive": True}],
                    }
                ]
            }
        )


def test_noise_follows_the_configured_epsilon():
    """Published counts minus true counts are Laplace(0, 1/eps) (before rounding), checked with scipy."""
    from detectors.frame import Frame
    from detectors.reference import Reference
    from detectors.runner import Histograms, WindowContext

    rng = np.random.default_rng(5)
    n = 4000
    frame = Frame.from_columns(
        event_id=np.array([str(i) for i in range(n)], dtype=object),
        event_time=np.arange(n, dtype=float),
        numeric={"x": rng.normal(size=n)},
    )
    diffs = {}
    for eps in (0.25, 2.0):
        spec = FeatureSpec(name="x", kind="numeric", sensitive=True, dp_epsilon=eps)
        plain = FeatureSpec(name="x", kind="numeric")
        ref = Reference.from_frame(frame, [spec], bins=50)
        out = []
        for seed in range(40):  # 40 releases x 50 bins
            h = Histograms(rng=np.random.default_rng(seed))
            noised = next(
                r for r in h.evaluate(WindowContext("m", "1", frame, ref, (spec,))) if r.measurement == "dw_histogram"
            )
            true = next(
                r
                for r in Histograms().evaluate(WindowContext("m", "1", frame, ref, (plain,)))
                if r.measurement == "dw_histogram"
            )
            assert noised.fields["noised"] and noised.fields["epsilon"] == eps
            assert not any(k.startswith("e") and k[1:].isdigit() for k in noised.fields)  # no edges
            out += [
                noised.fields[k] - true.fields[k] for k in true.fields if k.startswith("b") and true.fields[k] > 20
            ]  # away from the clip at 0
        d = diffs[eps] = np.array(out, dtype=float)
        # the published counts are rounded: compare with round(Laplace(0, 1/eps)) by chi-square,
        # cells k = -K..K (tails merged); P(round(L) = k) = F(k + 0.5) - F(k - 0.5)
        lap = stats.laplace(scale=1 / eps)
        k_max = max(1, int(np.ceil(3 / eps)))
        edges = np.concatenate([[-np.inf], np.arange(-k_max, k_max + 1) + 0.5])
        edges[-1] = np.inf
        observed = np.histogram(d, bins=edges)[0]
        expected = np.diff(lap.cdf(edges)) * d.size
        assert d.size >= 1000
        assert stats.chisquare(observed, expected).pvalue > 1e-3, (eps, observed, expected.round(1))
    assert diffs[0.25].std() > 4 * diffs[2.0].std()
    withheld = FeatureSpec(name="x", kind="numeric", sensitive=True, dp_epsilon=None)
    assert (
        Histograms().evaluate(WindowContext("m", "1", frame, Reference.from_frame(frame, [withheld]), (withheld,)))
        == []
    )


@pytest.mark.integration
@pytest.mark.slow  # a worker and the dashboard on sentinel values (~14 s)
def test_sentinels_appear_nowhere(settings, settings_env, tmp_path, consume_all):
    from streams.influx.sink import query
    from tests.reliability.helpers import Traffic, wait_for, windowed, worker
    from tests.streams.alerts.receiver import Receiver

    features = [
        {"name": "x0", "kind": "numeric"},
        {"name": "c0", "kind": "categorical"},
        {"name": "x1", "kind": "numeric", "sensitive": True, "dp_epsilon": 0.5},
        {"name": "c1", "kind": "categorical", "sensitive": True, "dp_epsilon": None},
    ]
    receiver = Receiver().start()
    cfg = {
        "models": [
            {
                "model_id": "m",
                "features": features,
                "window": {"size_events": 500, "idle_close_seconds": 600},
                "reference": {"first_n": 1000},
                "alerts": [
                    {"name": "every_window", "signal": "window.n_events", "op": ">", "threshold": 0},
                    {
                        "name": "any_drift",
                        "signal": "drift.p_value",
                        "where": {"feature": "*"},
                        "op": "<",
                        "threshold": 1.01,
                    },
                ],
            }
        ],
        "webhooks": [{"name": "ops", "url": receiver.url, "secret_env": "DW_TEST_SECRET"}],
    }
    mon = tmp_path / "monitors.yaml"
    mon.write_text(yaml.safe_dump(cfg))
    rng = np.random.default_rng(21)
    traffic = Traffic(settings)
    n_total = 0
    for b in range(6):  # 2 batches of reference (1000), then 4 windows of 500
        n = 500
        x0 = rng.normal(size=n)
        c0 = rng.choice(["a", "b", "c"], size=n).astype(object)
        x1 = np.where(rng.random(n) < 0.5, SENT_X1, rng.normal(size=n))
        c1 = np.where(rng.random(n) < 0.7, SENT_C1, rng.choice(["u", "v"], size=n)).astype(object)
        eids = [f"e{n_total + i}" for i in range(n)]
        if b == 3:
            x0[17], c0[17], eids[17] = SENT_X0, SENT_C0, SENT_EID
        doc = {
            "schema_version": 1,
            "type": "inference_batch",
            "model_id": "m",
            "model_version": "1",
            "event_id": eids,
            "event_time": (1.7e9 + np.arange(n_total, n_total + n) * 0.01).tolist(),
            "features": {"x0": x0.tolist(), "c0": c0.tolist(), "x1": x1.tolist(), "c1": c1.tolist()},
            "prediction": {"label": ["y"] * n},
        }
        traffic.raw(orjson.dumps(doc), key=b"m", events=n)
        n_total += n
    traffic.flush()
    traffic.close()
    log = tmp_path / "worker.log"
    env = {**settings_env, "DRIFTWATCH_LOG_LEVEL": "DEBUG", "DW_TEST_SECRET": "s" * 16}
    try:
        with worker(env, mon, log) as proc:
            wait_for(
                lambda: True if windowed(settings) == n_total else windowed(settings),
                90,
                f"{n_total} events windowed",
                [proc],
                log,
            )
            wait_for(
                lambda: len(receiver.requests) >= 2 or len(receiver.requests), 30, "alerts at the receiver", [proc], log
            )
            time.sleep(2)  # let the alerts topic and delivery log catch up
    finally:
        receiver.stop()
    # what the worker published about the sensitive features
    hist = query(settings, 'SELECT * FROM "dw_histogram" GROUP BY "feature"')
    by_feature: dict[str, list] = {}
    for r in hist:
        by_feature.setdefault(r["feature"], []).append(r)
    assert "c1" not in by_feature, "a withheld feature's histogram was published"
    assert by_feature["x1"] and all(r["noised"] and r["epsilon"] == 0.5 for r in by_feature["x1"])
    assert all(r.get("e01") is None for r in by_feature["x1"]), "noised histograms must carry no edges"
    assert by_feature["x0"] and not any(r["noised"] for r in by_feature["x0"])
    refs = query(settings, 'SELECT * FROM "dw_reference_histogram" GROUP BY "feature"')
    assert not any(r["feature"] == "c1" for r in refs)
    assert all(r.get("e01") is None and r["noised"] for r in refs if r["feature"] == "x1")
    # every value of every point in the database
    stored = []
    for m in query(settings, "SHOW MEASUREMENTS"):
        for r in query(settings, f'SELECT * FROM "{m["name"]}"'):
            stored.extend(repr(v) for v in r.values())
            stored.extend(str(v) for v in r.values())
    for k in query(settings, "SHOW TAG KEYS"):
        stored.append(str(k))
    stored_text = "\n".join(stored)
    assert "dw_window" in "".join(str(m) for m in query(settings, "SHOW MEASUREMENTS"))
    alerts_text = "\n".join(r.body.decode(errors="replace") for r in receiver.requests)
    assert receiver.requests, "no alert was delivered"
    topic = consume_all(settings, settings.topic_alerts, timeout=10, idle=2)
    assert topic, "no alert on the alerts topic"
    alerts_text += "\n".join(r.value.decode(errors="replace") for r in topic)
    log_text = log.read_text(errors="replace")
    assert "DEBUG" in log_text
    found = {
        where: [s for s in SENTINELS if s in text]
        for where, text in (("influxdb", stored_text), ("alerts", alerts_text), ("log", log_text))
    }
    assert found == {"influxdb": [], "alerts": [], "log": []}, found
