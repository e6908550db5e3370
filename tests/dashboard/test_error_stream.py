"""The performance page's error-stream section (``fet_online`` points), under AppTest, real InfluxDB."""

from __future__ import annotations

import time

import pytest

from dashboard import sample
from detectors import records as R
from detectors.records import Record
from streams.worker.labels import ERROR_STREAM_METRIC, FET_DETECTOR
from tests.dashboard.helpers import fresh_db
from tests.dashboard.test_app import _env, no_exception, open_page, texts

pytestmark = pytest.mark.integration


@pytest.fixture
def db(stack, monkeypatch: pytest.MonkeyPatch):
    with fresh_db(stack, "dashes") as conn:
        _env(monkeypatch, conn.url, conn.db)
        yield conn


def test_detections_of_the_error_stream_are_listed(db) -> None:
    now = int(time.time()) - 600
    tags = {R.T_MODEL: "m", R.T_VERSION: "1", R.T_METRIC: ERROR_STREAM_METRIC, R.T_DETECTOR: FET_DETECTOR}
    recs = [
        Record(
            R.PERFORMANCE,
            {**tags, R.T_METRIC: "accuracy", R.T_DETECTOR: "realized"},
            {"value": 0.9, "n": 100, "estimated": False},
            (now + 60 * k) * 10**9,
        )
        for k in range(6)
    ]
    recs.append(Record(R.PERFORMANCE, tags, {"phase": "reference", "n_ref": 400, "n": 0, "ert": 1e5}, now * 10**9))
    for k in range(1, 6):
        drift = int(k == 4)
        fields = {
            "phase": "monitoring",
            "n_ref": 1000,
            "reference_error_rate": 0.1,
            "ert": 1e5,
            "n": 200,
            "t": 200 * k,
            "drift": drift,
            "n_detections": drift,
            "statistic": 0.999999 if drift else 0.7,
            "threshold": 0.99999,
            "error_rate": 0.3 if k >= 4 else 0.1,
        }
        if drift:
            fields["first_detection_time"] = float(now + 60 * k - 30)
        recs.append(Record(R.PERFORMANCE, tags, fields, (now + 60 * k) * 10**9))
    assert sample.write_records(db, recs) == len(recs)
    at = open_page("performance", model="m")
    no_exception(at)
    text = texts(at)
    assert "Concept drift on the error stream" in [h.value for h in at.subheader]
    assert "**no drift**" in text and "error rate 30.0%" in text and "vs 10.0%" in text
    (table,) = [d for d in at.dataframe if "first detection (label time)" in d.value.columns]
    assert len(table.value) == 1 and table.value["detections"].tolist() == [1]
    assert any("Error rate per window" in str(c.proto.spec) for c in at.get("vega_lite_chart"))


def test_before_any_detection_the_page_says_what_happens(db) -> None:
    now = int(time.time()) - 600
    tags = {R.T_MODEL: "m", R.T_VERSION: "1", R.T_METRIC: "accuracy", R.T_DETECTOR: "realized"}
    sample.write_records(db, [Record(R.PERFORMANCE, tags, {"value": 0.9, "n": 10, "estimated": False}, now * 10**9)])
    at = open_page("performance", model="m")
    no_exception(at)
    assert "No error-stream detection yet." in texts(at)
