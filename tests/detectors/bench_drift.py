"""Timing of the native drift engine (not a test; run by hand).

    .venv/bin/python tests/detectors/bench_drift.py [--rows 5000] [--ref 5000] [--repeat 50]

Window: ``rows`` events x 20 features (15 numeric, 5 categorical with 12 categories,
5 % missing values), reference of ``ref`` rows from the same distribution.
Prints the median and minimum wall time and the median CPU time of each step.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from detectors.frame import Frame
from detectors.reference import Reference
from detectors.spec import DriftSpec, FeatureSpec


def make_frame(rng: np.random.Generator, n: int, shift: float = 0.0) -> Frame:
    numeric = {}
    for i in range(15):
        col = rng.normal(shift if i == 0 else 0.0, 1.0, n)
        col[rng.random(n) < 0.05] = np.nan
        numeric[f"x{i}"] = col
    cats = np.array([f"cat_{j}" for j in range(12)], dtype=object)
    categorical = {}
    for i in range(5):
        col = cats[rng.integers(0, 12, n)].copy()
        col[rng.random(n) < 0.05] = None
        categorical[f"c{i}"] = col
    return Frame.from_columns(
        event_id=np.arange(n).astype(str), event_time=np.arange(n) * 1e-3, numeric=numeric, categorical=categorical
    )


FEATURES = tuple(
    [FeatureSpec(name=f"x{i}", kind="numeric") for i in range(15)]
    + [FeatureSpec(name=f"c{i}", kind="categorical") for i in range(5)]
)


def timeit(fn, repeat: int) -> tuple[float, float, float]:
    """Median and minimum wall time and median CPU time (ms) of ``fn()``.

    On a shared machine the CPU time and the minimum are the steadier figures.
    """
    fn()
    wall, cpu = [], []
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        fn()
        cpu.append((time.process_time() - c) * 1e3)
        wall.append((time.perf_counter() - t) * 1e3)
    return float(np.median(wall)), float(np.min(wall)), float(np.median(cpu))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=5000)
    ap.add_argument("--ref", type=int, default=5000)
    ap.add_argument("--repeat", type=int, default=50)
    ap.add_argument("--alibi", action="store_true", help="also time the alibi-detect engine")
    a = ap.parse_args()
    from detectors.quality import data_quality
    from detectors.runner import (
        DataDrift,
        DataQuality,
        Histograms,
        WindowContext,
        WindowStats,
        default_evaluators,
        evaluate_window,
    )
    from detectors.univariate import univariate_drift

    rng = np.random.default_rng(0)
    ref_frame = make_frame(rng, a.ref)
    window = make_frame(rng, a.rows)
    ref = Reference.from_frame(ref_frame, FEATURES)
    print(
        f"window {a.rows} x 20 (15 numeric, 5 categorical), reference {a.ref} rows, "
        f"{a.repeat} runs; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"
    )
    print(f"  {'step':32s} {'wall median':>12s} {'wall min':>10s} {'CPU median':>11s}")
    rows = [
        ("reference build", lambda: Reference.from_frame(ref_frame, FEATURES)),
        ("drift ks (native)", lambda: univariate_drift(window, ref, DriftSpec())),
        ("drift cvm (native)", lambda: univariate_drift(window, ref, DriftSpec(numeric_test="cvm"))),
        ("quality", lambda: data_quality(window, FEATURES)),
    ]

    def ctx() -> WindowContext:  # a fresh context per run: results are cached on it
        return WindowContext(
            model_id="m",
            version="1",
            frame=window,
            reference=ref,
            features=FEATURES,
            drift=DriftSpec(),
            task="classification",
            segments=(),
            window_start=0.0,
            window_end=5.0,
        )

    builtin = [WindowStats(), DataQuality(), DataDrift(), Histograms()]
    rows.append(("evaluate_window (4 built-ins)", lambda: evaluate_window(ctx(), builtin)))
    every = default_evaluators()
    rows.append(("evaluate_window (default evaluators)", lambda: evaluate_window(ctx(), every)))
    if a.alibi:
        rows.append(("drift ks (alibi)", lambda: univariate_drift(window, ref, DriftSpec(engine="alibi"))))
    for name, fn in rows:
        med, low, cpu = timeit(fn, a.repeat if "alibi" not in name else 5)
        print(f"  {name:32s} {med:9.2f} ms {low:7.2f} ms {cpu:8.2f} ms")


if __name__ == "__main__":
    main()
