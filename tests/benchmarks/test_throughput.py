"""The throughput benchmark: its traffic, its bookkeeping, and one small real run.

No timing assertions: the figures depend on the machine. What must hold is that
the benchmark measures what it says — the traffic is the SDK's wire format, the
floor and the naive baseline read the events that were produced, and the worker
counted every produced event — and that it prints the JSON keys the README
table is built from.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import orjson
import pytest

from benchmarks import procstats, throughput
from benchmarks.traffic import (
    CATEGORICAL,
    NUMERIC,
    Traffic,
    balanced_model_ids,
    batch_payload,
    iter_messages,
    monitor_config,
    partition_for,
    single_event_payloads,
)
from streams.lifetime import die_with_parent
from streams.wire.schemas import InferenceBatch, InferenceEvent
from streams.worker.monitors import parse_monitors

ROOT = Path(__file__).resolve().parents[2]


def _plan(*argv: str) -> throughput.Plan:
    p = argparse.ArgumentParser()
    throughput.add_arguments(p)
    return throughput.Plan.from_args(p.parse_args(list(argv)))


# ----------------------------------------------------------------------------- traffic


def test_model_ids_fill_the_partitions_evenly():
    ids = balanced_model_ids(8, 4)
    assert len(set(ids)) == 8
    counts = np.bincount([partition_for(m, 4) for m in ids], minlength=4)
    assert counts.tolist() == [2, 2, 2, 2]


def test_partition_for_matches_kafka_python():
    from kafka.partitioner.default import murmur2

    for key in ("a", "bench-m0", "iris"):
        assert partition_for(key, 4) == (murmur2(key.encode()) & 0x7FFFFFFF) % 4


def test_batches_are_valid_sdk_column_batches_with_20_features():
    tr = Traffic(models=["m1"], events=3000, batch_events=1000)
    msgs = list(iter_messages(tr))
    assert [n for _k, _v, n in msgs] == [1000, 1000, 1000]
    batch = InferenceBatch.model_validate_json(msgs[0][1])
    assert set(batch.features) == set(NUMERIC) | set(CATEGORICAL)
    assert len(NUMERIC) == 15 and len(CATEGORICAL) == 5
    assert len(batch.event_id) == 1000 and msgs[0][0] == b"m1"
    ids = [e for _k, v, _n in msgs for e in orjson.loads(v)["event_id"]]
    assert len(set(ids)) == 3000  # unique event ids across batches


def test_arrow_traffic_is_the_json_traffic_in_the_sdks_arrow_encoding():
    import pyarrow as pa

    js = Traffic(models=["m1"], events=2000, batch_events=1000)
    ar = Traffic(models=["m1"], events=2000, batch_events=1000, wire="arrow", base_time=js.base_time)
    assert js.headers == [] and ar.headers == [("content-type", b"application/vnd.apache.arrow.stream")]
    for (k1, v1, n1), (k2, v2, n2) in zip(iter_messages(js), iter_messages(ar), strict=True):
        assert (k1, n1) == (k2, n2) and v2[:4] == b"\xff\xff\xff\xff"
        doc, table = orjson.loads(v1), pa.ipc.open_stream(v2).read_all()
        assert table.column("event_id").to_pylist() == doc["event_id"]
        assert table.column("event_time").to_pylist() == doc["event_time"]
        feats = table.column("features").combine_chunks()
        for i in range(feats.type.num_fields):
            name = feats.type.field(i).name
            assert feats.field(i).to_pylist() == doc["features"][name], name


def test_single_event_messages_carry_the_same_events():
    tr = Traffic(models=["m1"])
    payload = batch_payload(tr, "m1", 0, 5)
    singles = single_event_payloads(payload)
    doc = orjson.loads(payload)
    assert len(singles) == 5
    for i, raw in enumerate(singles):
        ev = InferenceEvent.model_validate_json(raw)
        assert ev.event_id == doc["event_id"][i]
        assert ev.features["n3"] == doc["features"]["n3"][i]
        assert ev.features["c1"] == doc["features"]["c1"][i]


def test_monitor_config_is_valid_and_windows_are_5000_by_default():
    cfg = parse_monitors(monitor_config(Traffic(models=balanced_model_ids(4, 4))))
    assert len(cfg.models) == 4
    assert all(m.window.size_events == 5000 and len(m.features) == 20 for m in cfg.models)


# ----------------------------------------------------------------------------- plan & summary


def test_full_defaults_follow_the_issue():
    plan = _plan()
    assert plan.events == 10_000_000 and plan.window == 5000 and plan.rss_at == [1_000_000, 10_000_000]
    assert len(plan.models) == 8


def test_sizes_round_up_to_whole_windows():
    plan = _plan("--quick", "--models", "4", "--window", "1000", "--events", "10500", "--naive-events", "1")
    assert plan.events == 12_000  # 3 windows per model
    assert plan.naive_events == 4_000  # at least one window per model
    assert plan.scale_events == plan.events


def test_summary_computes_ratios_and_targets():
    report = {
        "worker": {
            "events_per_s_per_worker": 120_000.0,
            "events_counted": 10,
            "events_expected": 10,
            "latency_ms": {"p50": 100.0, "p99": 400.0},
            "peak_rss_mb": 300.0,
            "latency_after_warm_up_ms": {"p50": 90.0, "p99": 300.0, "warm_up_s": 5.0},
            "rss_mb_at": {"1000000": 200.0, "10000000": 210.0},
        },
        "floor": {"events_per_s": 200_000.0},
        "naive": {"events_per_s": 3_000.0},
        "drift": {"data_drift": {"p50": 8.0, "p99": 12.0, "cpu": {"p50": 7.0, "p99": 9.0}}},
        "scale_out": {"one_worker": {"events_per_s": 100.0}, "two_workers": {"events_per_s": 170.0}},
    }
    s = throughput.summarise(report, _plan())
    assert s["ratio_to_floor"] == 0.6
    assert s["rss_growth"] == 0.05
    assert s["two_workers_speedup"] == 1.7
    assert s["speedup_vs_naive"] == 40.0
    assert all(s["targets"].values())
    assert s["latency_after_warm_up_ms"] == {"p50": 90.0, "p99": 300.0, "warm_up_s": 5.0}
    report["worker"]["events_counted"] = 9
    assert throughput.summarise(report, _plan())["targets"]["counted_equals_produced"] is False


def test_procstats_reads_this_process():
    pid = os.getpid()
    assert 0 < procstats.rss_mb(pid) <= procstats.peak_rss_mb(pid)
    meter = procstats.CpuMeter({"me": pid}).start()
    sum(i * i for i in range(300_000))
    cpu = meter.stop()
    assert cpu["me"] is not None and cpu["me"] >= 0 and "machine_total" in cpu
    assert procstats.machine()["nproc"] == os.cpu_count()
    with pytest.raises(procstats.ProcessGone):
        procstats.rss_mb(2**22 + 12345)


# ----------------------------------------------------------------------------- a real run


@pytest.mark.integration
@pytest.mark.slow
def test_quick_benchmark_counts_every_event_and_prints_the_table_keys(tmp_path: Path):
    out = tmp_path / "bench.json"
    cmd = [
        sys.executable,
        "-m",
        "streams.cli",
        "bench",
        "throughput",
        "--quick",
        "--models",
        "4",
        "--window",
        "1000",
        "--events",
        "16000",
        "--naive-events",
        "8000",
        "--drift-repeats",
        "3",
        "--output",
        str(out),
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, preexec_fn=die_with_parent())
    assert out.exists(), f"no JSON written (exit {proc.returncode}):\n{proc.stderr[-4000:]}"
    report = json.loads(proc.stdout)
    assert report == json.loads(out.read_text())
    assert report["errors"] == {}, f"{report['errors']}\n{proc.stderr[-4000:]}"
    assert proc.returncode == 0

    for key in (
        "events_per_s_per_worker",
        "floor_events_per_s",
        "naive_events_per_s",
        "ratio_to_floor",
        "drift_ms_5000x20",
        "latency_ms",
        "peak_rss_mb",
        "two_workers_speedup",
        "machine",
        "targets",
    ):
        assert key in report, key
    assert report["machine"]["nproc"] == os.cpu_count()

    produced = report["produce"]["events"]
    assert produced == 16_000
    assert report["events_produced"] == produced
    assert report["events_counted"] == produced
    assert report["worker"]["windows"] == 16
    assert report["floor"]["events"] == produced
    assert report["floor_columnar"]["events"] == produced
    assert report["scale_out"]["one_worker"]["events_counted"] == produced
    assert report["scale_out"]["two_workers"]["events_counted"] == produced
    assert report["naive"]["events"] == 8000 and report["naive"]["drift_calls"] == 4
    assert set(report["worker"]["rss_mb_at"]) == {"1600", "16000"}  # quick: at 10% and 100%
    for cpu_of in (report["worker"]["cpu_percent"], report["scale_out"]["two_workers"]["cpu_percent"]):
        assert {"broker", "influxd", "worker0", "machine_total"} <= set(cpu_of)
    assert "worker1" in report["scale_out"]["two_workers"]["cpu_percent"]


def test_warm_up_ends_when_every_models_first_evaluated_window_is_queryable():
    P = throughput.WindowPoint
    pts = [
        P((1, "a", "1"), 5, 10.0, 10.1),
        P((2, "a", "1"), 5, 11.0, 15.0),  # a: 2nd window seen at 15.0
        P((1, "b", "1"), 5, 10.5, 10.6),
        P((2, "b", "1"), 5, 12.0, 16.0),  # b: 2nd window seen at 16.0
        P((3, "a", "1"), 5, 16.5, 16.7),
        P((3, "b", "1"), 5, 17.0, 17.5),
    ]
    end, lat = throughput._warm_up_end(pts)
    assert end == 16.0
    assert sorted(lat.round(1).tolist()) == [200.0, 500.0]  # only the windows closed after it


def test_cases_parse_count_and_time_windows_and_know_how_many_events_they_close():
    plan = _plan("--models", "2", "--events", "4000000", "--cases", "1000000,60s")
    one_m, sixty = plan.cases
    assert (one_m.name, one_m.events, one_m.seconds) == ("count_1000000", 1_000_000, None)
    assert (sixty.name, sixty.events, sixty.seconds) == ("time_60s", None, 60.0)
    tr = Traffic(models=plan.models, events=plan.events, base_time=1_699_999_970.0)  # 10 s before a minute
    assert one_m.expected(tr) == 4_000_000  # two whole windows per model
    # one event per ms over 2,000 s: 10 s, then 33 whole minutes close; the last 10 s stay open
    assert sixty.expected(tr) == 2 * (10_000 + 33 * 60_000)
    with pytest.raises(throughput.BenchError):
        throughput.Case.parse("ten")


def test_the_rate_is_measured_after_every_models_first_window():
    P = throughput.WindowPoint
    # two models, windows of 1M events closing in rounds: round 1 at ~10 s, round 2 at ~20 s
    pts = [
        P((1, "a", "1"), 1_000_000, 10.0, 10.1),
        P((1, "b", "1"), 1_000_000, 10.5, 10.6),
        P((2, "a", "1"), 1_000_000, 20.0, 20.1),
        P((2, "b", "1"), 1_000_000, 20.5, 20.6),
    ]
    rate, span = throughput.steady_rate(pts)
    assert span == 10.0 and rate == 200_000.0  # the second round's 2M events over 10.5 → 20.5 s
    assert throughput.steady_rate(pts[:2]) == (None, 0.0)  # one round: nothing to measure


def test_summary_reports_each_case_against_the_same_floor():
    report = {
        "floor": {"events_per_s": 100_000.0},
        "worker": {"events_per_s_per_worker": 35_000.0},
        "cases": {
            "count_1000000": {
                "events_per_s_per_worker": 45_000.0,
                "latency_ms": {"p99": 900.0},
                "events_counted": 8,
                "events_expected": 8,
            },
            "time_60s": {"events_per_s_per_worker": 30_000.0, "latency_ms": {"p99": 1500.0}},
        },
    }
    s = throughput.summarise(report, _plan())
    assert s["ratio_to_floor"] == 0.35 and s["targets"]["ratio_to_floor_5000>=0.3"] is True
    assert s["cases_summary"]["count_1000000"]["ratio_to_floor"] == 0.45
    assert s["targets"]["ratio_to_floor_count_1000000>=0.4"] is True
    assert s["targets"]["latency_p99_ms_count_1000000<1000"] is True
    assert s["targets"]["ratio_to_floor_time_60s>=0.4"] is False
    assert s["targets"]["latency_p99_ms_time_60s<1000"] is False
    assert s["targets"]["counted_equals_expected_time_60s"] is None


def test_with_arrow_traffic_every_ratio_is_against_the_json_floor_and_the_same_wire_floor_apart():
    """Issue 16's floor is the orjson consumer: with ``--wire arrow`` the workers are compared with it
    (``ratio_to_floor``) and with the floor that reads Arrow (``ratio_to_floor_same_wire``), main phase and cases."""
    report = {
        "floor": {"events_per_s": 400_000.0, "events_per_cpu_s": 2_000_000.0, "wire": "arrow"},
        "floor_columnar": {"events_per_s": 300_000.0, "wire": "arrow"},
        "floor_json": {"events_per_s": 200_000.0, "events_per_cpu_s": 1_000_000.0, "wire": "json"},
        "floor_json_columnar": {"events_per_s": 150_000.0, "wire": "json"},
        "worker": {"events_per_s_per_worker": 50_000.0, "events_per_worker_cpu_s": 100_000.0},
        "cases": {"time_60s": {"events_per_s_per_worker": 90_000.0, "events_per_worker_cpu_s": 250_000.0}},
    }
    s = throughput.summarise(report, _plan("--wire", "arrow"))
    assert (s["floor_events_per_s"], s["floor_same_wire_events_per_s"]) == (200_000.0, 400_000.0)
    assert (s["floor_columnar_events_per_s"], s["floor_same_wire_columnar_events_per_s"]) == (150_000.0, 300_000.0)
    assert (s["ratio_to_floor"], s["ratio_to_floor_same_wire"]) == (0.25, 0.125)
    assert (s["ratio_to_floor_per_cpu_s"], s["ratio_to_floor_same_wire_per_cpu_s"]) == (0.1, 0.05)
    case = s["cases_summary"]["time_60s"]
    assert (case["ratio_to_floor"], case["ratio_to_floor_same_wire"], case["ratio_to_floor_per_cpu_s"]) == (
        0.45,
        0.225,
        0.25,
    )
    assert s["targets"]["ratio_to_floor_time_60s>=0.4"] is True  # the target reads the JSON floor
    lines = throughput.ratio_lines({**report, **s})
    assert "0.45 of the JSON floor, 0.225 of the arrow floor" in lines[-1] and lines[-1].startswith("time_60s")
    assert "(arrow) 400,000 events/s" in lines[0]


def test_with_json_traffic_both_floors_are_the_one_json_floor():
    report = {
        "floor": {"events_per_s": 200_000.0, "events_per_cpu_s": 800_000.0, "wire": "json"},
        "worker": {"events_per_s_per_worker": 50_000.0, "events_per_worker_cpu_s": 80_000.0},
    }
    s = throughput.summarise(report, _plan())
    assert s["floor_events_per_s"] == s["floor_same_wire_events_per_s"] == 200_000.0
    assert s["ratio_to_floor"] == s["ratio_to_floor_same_wire"] == 0.25
    assert s["ratio_to_floor_per_cpu_s"] == s["ratio_to_floor_same_wire_per_cpu_s"] == 0.1


def test_arrow_traffic_without_its_json_floor_reports_no_ratio_to_floor():
    """A failed JSON floor must not let the Arrow floor pass for issue 16's (a ratio against the wrong floor)."""
    report = {
        "floor": {"events_per_s": 400_000.0, "wire": "arrow"},
        "worker": {"events_per_s_per_worker": 50_000.0},
    }
    s = throughput.summarise(report, _plan("--wire", "arrow"))
    assert s["ratio_to_floor"] is None and s["ratio_to_floor_same_wire"] == 0.125
    assert s["targets"]["ratio_to_floor>=0.5"] is None


@pytest.mark.integration
@pytest.mark.slow
def test_quick_benchmark_in_the_arrow_wire_format_counts_every_event_and_decodes_both(tmp_path: Path):
    """``--wire arrow``: the floor and the worker read the SDK's Arrow batches; the decode phase reports both formats."""
    out = tmp_path / "bench.json"
    cmd = [sys.executable, "-m", "streams.cli", "bench", "throughput", "--quick", "--models", "4", "--window", "1000"]
    cmd += ["--events", "16000", "--wire", "arrow", "--skip", "drift,scale,naive", "--output", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, preexec_fn=die_with_parent())
    assert out.exists(), f"no JSON written (exit {proc.returncode}):\n{proc.stderr[-4000:]}"
    report = json.loads(out.read_text())
    assert report["errors"] == {} and proc.returncode == 0, f"{report['errors']}\n{proc.stderr[-4000:]}"
    assert report["wire"] == "arrow" and report["config"]["wire"] == "arrow"
    assert report["floor"]["wire"] == "arrow" and report["floor"]["events"] == 16_000
    # issue 16's floor too: the same events as JSON batches, read by the orjson consumer
    assert report["floor_json"]["wire"] == "json" and report["floor_json"]["events"] == 16_000
    assert report["floor_json_columnar"]["columnar"] is True
    assert report["floor_events_per_s"] == report["floor_json"]["events_per_s"]
    assert report["floor_same_wire_events_per_s"] == report["floor"]["events_per_s"]
    eps = report["events_per_s_per_worker"]
    assert report["ratio_to_floor"] == round(eps / report["floor_json"]["events_per_s"], 3)
    assert report["ratio_to_floor_same_wire"] == round(eps / report["floor"]["events_per_s"], 3)
    assert "of the JSON floor" in proc.stderr and "of the arrow floor" in proc.stderr
    assert report["events_counted"] == report["produce"]["events"] == 16_000
    sizes = {w: report["decode"][w]["bytes_per_event"] for w in ("json", "arrow")}
    assert abs(report["produce"]["bytes_per_event"] - sizes["arrow"]) < 3 < abs(sizes["arrow"] - sizes["json"])
    for wire in ("json", "arrow"):
        d = report["decode"][wire]
        assert d["decode_us_per_event"] > d["parse_only_us_per_event"] > 0
    assert report["decode_us_per_event"] == {w: report["decode"][w]["decode_us_per_event"] for w in ("json", "arrow")}


def test_a_case_gets_enough_events_to_close_two_windows_per_model_or_is_refused():
    """``--cases 1000000`` on the default or quick size closed no window ("waiting for 0 events")."""
    quick = _plan("--quick", "--cases", "1000000")  # 8 models
    assert quick.events == 16_000_000  # two 1M-event windows for each of the 8 models
    assert quick.scale_events == 200_000  # the other phases keep their quick size
    one_m = quick.cases[0]
    tr = Traffic(models=quick.models, events=quick.events)
    assert one_m.expected(tr) == 16_000_000 and tr.per_model // 1_000_000 == 2
    assert _plan("--cases", "1000000").events == 16_000_000  # default 10M: too few as well
    assert _plan("--quick", "--cases", "5000").events == 200_000  # a small case changes nothing

    # event-time windows: whatever the traffic's start, at least two whole windows close per model
    sixty = _plan("--quick", "--models", "2", "--window", "1000", "--cases", "60s")
    assert sixty.events == 360_000
    for offset in (0.0, 0.001, 17.5, 59.999):
        tr = Traffic(models=sixty.models, events=sixty.events, base_time=1_700_000_040.0 + offset)
        per_window = 60 * 1000
        assert sixty.cases[0].expected(tr) >= 2 * per_window * 2, offset

    with pytest.raises(throughput.BenchError, match=r"--events must be at least 16,000,000 \(got 200,000\)"):
        _plan("--quick", "--events", "200000", "--cases", "1000000")
    assert _plan("--events", "4000000", "--models", "2", "--cases", "1000000").events == 4_000_000  # just enough
