"""Accuracy and cost of window summaries vs the exact path (not a test; run by hand).

    .venv/bin/python tests/detectors/bench_summaries.py [--rows 5000] [--ref 20000] [--windows 40] [--bins 1024]

Window: ``rows`` events x 20 features (15 numeric — normal, Student-t(3), lognormal in turn — and
5 categorical with 12 categories, 5 % missing values), reference of ``ref`` rows; feature x0
shifted by 0 .. 0.3 sd over the windows. Prints, as JSON: the largest and the 99th-percentile
|KS D summary - KS D scipy| and relative CvM error, the largest Wasserstein error in reference
sds, the update cost per event (batches of 1,000 events, reservoir off and on), the cost of the
tests at window close, and the exact path's cost on the same window (quality + drift).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from scipy import stats

from detectors.frame import Frame
from detectors.quality import data_quality
from detectors.reference import Reference, WindowColumns
from detectors.spec import DriftSpec
from detectors.summaries import SummaryLayout, numeric_statistics, summary_drift, summary_quality
from detectors.univariate import univariate_drift
from tests.detectors import bench_drift
from tests.detectors.bench_drift import FEATURES


def make_frame(rng: np.random.Generator, n: int, shift: float = 0.0, start: int = 0) -> Frame:
    """bench_drift's window, its numeric features drawn in turn from normal, Student-t(3) and lognormal laws."""
    f = bench_drift.make_frame(rng, n)
    for i in range(15):
        col = (rng.normal(size=n), rng.standard_t(3, n), rng.lognormal(0, 1, n))[i % 3] + (shift if i == 0 else 0.0)
        f.numeric[f"x{i}"] = np.where(np.isnan(f.numeric[f"x{i}"]), np.nan, col)  # its 5 % missing values kept
    f.event_id = np.arange(start, start + n).astype(str).astype(object)
    return f


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=5000)
    p.add_argument("--ref", type=int, default=20000)
    p.add_argument("--windows", type=int, default=40)
    p.add_argument("--bins", type=int, default=1024)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    rng = np.random.default_rng(a.seed)
    ref = Reference.from_frame(make_frame(rng, a.ref), FEATURES)
    layouts = {r: SummaryLayout.build(ref, FEATURES, bins=a.bins, reservoir=r) for r in (0, 2000)}
    ks_err, cvm_err, w_err = [], [], []
    t_update = {0: 0.0, 2000: 0.0}
    t_close = t_exact = 0.0
    spec = DriftSpec(threshold={"method": "p_value"})
    for k in range(a.windows):
        w = make_frame(rng, a.rows, shift=0.3 * k / a.windows, start=k * a.rows)
        parts = [w.take(slice(lo, lo + 1000)) for lo in range(0, a.rows, 1000)]
        for r, lay in layouts.items():
            s = lay.summary()
            t0 = time.process_time()
            for part in parts:
                s.update(part)
            t_update[r] += time.process_time() - t0
        t0 = time.process_time()
        summary_quality(s, FEATURES)
        summary_drift(s, ref, spec)
        t_close += time.process_time() - t0
        t0 = time.process_time()
        cols = WindowColumns(w)
        data_quality(w, FEATURES, cols)
        univariate_drift(w, ref, spec, columns=cols)
        t_exact += time.process_time() - t0
        st = numeric_statistics(
            s.layout, s.arrays["f.num_counts"], s.arrays["f.num_sums"], s.arrays["f.num_min"], s.arrays["f.num_max"]
        )
        for i, nl in enumerate(s.layout.numeric):
            r = ref.numeric[nl.name].values
            x = w.numeric[nl.name]
            x = x[np.isfinite(x)]
            ks_err.append(abs(stats.ks_2samp(r, x).statistic - st.ks[i]))
            t = stats.cramervonmises_2samp(r, x).statistic
            cvm_err.append(abs(st.cvm[i] - t) / t)
            w_err.append(abs(stats.wasserstein_distance(r, x) - st.wasserstein[i]) / np.std(r))
    n_events = a.windows * a.rows
    print(
        json.dumps(
            {
                "config": vars(a),
                "ks_abs_error_max": round(float(np.max(ks_err)), 6),
                "ks_abs_error_p99": round(float(np.quantile(ks_err, 0.99)), 6),
                "ks_abs_error_mean": round(float(np.mean(ks_err)), 6),
                "cvm_rel_error_max": round(float(np.max(cvm_err)), 4),
                "cvm_rel_error_p99": round(float(np.quantile(cvm_err, 0.99)), 4),
                "wasserstein_error_max_in_ref_sd": round(float(np.max(w_err)), 5),
                "update_cpu_us_per_event_no_reservoir": round(1e6 * t_update[0] / n_events, 2),
                "update_cpu_us_per_event_reservoir_2000": round(1e6 * t_update[2000] / n_events, 2),
                "close_cpu_ms_per_window": round(1e3 * t_close / a.windows, 2),
                "exact_cpu_ms_per_window": round(1e3 * t_exact / a.windows, 2),
                "summary_bytes_reservoir_2000": int(s.nbytes),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
