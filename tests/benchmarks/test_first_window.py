"""benchmarks/first_window.py: both variants run on the real detector process and report every window
(the latencies themselves depend on the machine's load: docs/performance.md has measured ones)."""

from __future__ import annotations

import argparse
import asyncio
import math

import pytest

from benchmarks import first_window


@pytest.mark.slow  # two detector processes and their one-off fits
def test_each_variant_reports_its_reference_first_and_later_windows():
    args = argparse.Namespace(models=2, window=1000, windows=2, fill=0.2, rounds=1)
    out = asyncio.run(first_window._run(args))
    assert [r["prepare"] for r in out["runs"]] == [False, True]
    for r in out["runs"]:
        assert len(r["reference_windows_s"]) == 2  # one per model
        assert r["windows"] == 4 and len(r["first_windows_s"]) == 2  # two judged windows per model
        assert all(0 <= s < 300 for s in (*r["reference_windows_s"], *r["first_windows_s"]))
        assert math.isfinite(r["later_windows_max_s"])
