"""``bench throughput --cases hot4`` (benchmarks/hot_model.py): its traffic, config and report, without a stack."""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import orjson

from benchmarks import hot_model, throughput
from benchmarks.traffic import Traffic
from streams.wire.contract import shard_partitions
from streams.worker.monitors import load_monitors


def test_hot_case_parses_and_sizes_are_whole_windows_of_whole_messages():
    case = throughput.Case.parse("hot4")
    assert (case.name, case.shards, case.events) == ("hot4", 4, None)
    args = argparse.Namespace(quick=False, hot_events=1_000_001, hot_window=99_999)
    events, window = hot_model.sizes(args, 4, 1000)
    assert window == 100_000 and events == 1_100_000  # window: whole messages per shard; events: whole windows
    assert hot_model.sizes(argparse.Namespace(quick=True), 4, 1000) == (200_000, 20_000)


def test_traffic_goes_round_robin_to_the_shards_partitions_and_the_config_is_valid(tmp_path: Path):
    tr = Traffic(models=[hot_model.MODEL], events=16_000, batch_events=1000)
    msgs = list(hot_model.sharded_messages(tr, 4))
    per = Counter(p for _k, _v, _n, p in msgs)
    assert set(per) == set(shard_partitions(hot_model.MODEL, 4, 4)) and set(per.values()) == {4}
    assert all(
        k == hot_model.MODEL.encode() and orjson.loads(v)["model_id"] == hot_model.MODEL for k, v, _n, _p in msgs
    )
    ref = hot_model.write_reference(tmp_path / "ref.csv", tr, rows=100)
    assert ref.read_text().splitlines()[0].startswith("n0,n1")
    cfg = load_monitors(hot_model.write_config(tmp_path / "m.yaml", tr, 100_000, 4, ref))
    (m,) = cfg.models
    assert (m.shards, m.window.size_events, m.reference.file) == (4, 100_000, ref)


def test_summary_reports_the_hot_case_and_its_target():
    run = {"events_per_s": 20_000.0, "events_per_worker_cpu_s": 90_000.0, "cpu_percent": {"worker0": 22.0}}
    report = {
        "cases": {
            "hot4": {
                "cpu_efficiency_two_vs_one": 0.85,
                "speedup_two_vs_one": 1.5,
                "workers_1": run,
                "workers_2": {**run, "events_per_s": 30_000.0},
            }
        }
    }
    plan = throughput.Plan.from_args(throughput_args())
    s = throughput.summarise(report, plan)
    assert s["hot_summary"]["hot4"]["workers_2"]["events_per_s"] == 30_000.0
    assert s["targets"]["hot4_cpu_efficiency_two_vs_one>=0.9"] is False
    assert "cases_summary" not in s  # the hot case is not a window kind against the floor


def throughput_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    throughput.add_arguments(parser)
    return parser.parse_args(["--quick", "--cases", "hot4"])
