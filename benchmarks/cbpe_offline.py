"""CBPE on ``driftwatch bench real``'s labelled streams, in-process (the worker's calibration, no stack).

``python -m benchmarks.cbpe_offline [--lag 1 2 3] [--state-dir DIR]`` replays each labelled classification
stream window by window as the worker's label join feeds :class:`detectors.performance.CalibrationCollector`:
the estimate of window ``k`` uses the labels of windows ``< k - lag + 1`` (lag 2: the labels of window
``k - 1`` come with the events of window ``k + 1``, as ``bench real`` replays them and its worker sees them).
It prints, per lag and stream, the MAE of the estimate against realized accuracy over the windows after the
reference that have one, how many those are (``windows``) of how many were evaluated, their share
(``coverage``), the share of them whose realized accuracy lies within the estimate's band (``band_coverage``;
nominal 99.7 % for ± 3 sd), the MAE of NannyML's rule (the first calibration kept for good: ``drift_z=None``)
over all of them and over the same windows, and the collector's last "concept unstable" reason if it has one
(``unstable_reason``) — so a change to the estimator can be measured in seconds before a ``bench real`` run. NannyML's streams need its virtualenv (``bench real``'s).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from benchmarks.real import default_bench_dir, realized_accuracy
from benchmarks.real_streams import Stream, load_streams, site_packages
from detectors.performance import CBPE, CalibrationCollector


def estimates(
    s: Stream, lag: int, drift_z: float | None = 5.0
) -> tuple[dict[int, dict[str, float] | None], CalibrationCollector]:
    """Per window after the reference: the default collector's estimate (None: not calibrated), and the
    collector at the end."""
    assert s.proba is not None and s.label is not None
    col = CalibrationCollector(max(1000, s.ref_n), 200, drift_z=drift_z)  # the default calibration_rows
    w, out = s.window, {}
    for k in range(s.n_windows):
        j = k - lag
        if j >= 0:
            a, b = j * w, (j + 1) * w
            col.add(s.proba[a:b], s.classes, s.label[a:b], None if s.pred_label is None else s.pred_label[a:b])
        if k >= s.ref_n // w:
            cal = col.calibration()
            a, b = k * w, (k + 1) * w
            pred = None if s.pred_label is None else s.pred_label[a:b]
            out[k] = None if cal is None else CBPE(cal).estimate(s.proba[a:b], s.classes, pred)
    return out, col


def summary(s: Stream, lag: int) -> dict[str, float | int | str | None]:
    real = realized_accuracy(s)
    (est, col), (first, _) = estimates(s, lag), estimates(s, lag, drift_z=None)
    ks = [k for k, v in est.items() if v is not None]

    def mae(e: dict[int, dict[str, float] | None], keys) -> float | None:
        errs = [abs(float((e[k] or {}).get("accuracy", 0.0)) - real[k]) for k in keys]
        return round(float(np.mean(errs)), 4) if errs else None

    inside = [est[k]["accuracy_lower"] <= real[k] <= est[k]["accuracy_upper"] for k in ks]  # type: ignore[index]
    return {
        "mae": mae(est, ks),
        "windows": len(ks),
        "evaluated": len(est),
        "coverage": round(len(ks) / len(est), 3) if est else None,
        "band_coverage": round(float(np.mean(inside)), 3) if inside else None,
        "first_calibration_mae": mae(first, list(first)),
        "first_calibration_mae_same_windows": mae(first, ks),
        "recalibrations": col.recalibrations,
        "unstable_reason": col.unstable_reason,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lag", type=int, nargs="+", default=[2], help="windows between a window and its labels")
    ap.add_argument("--state-dir", type=Path, default=None, help="bench real's state folder (NannyML's venv)")
    args = ap.parse_args(argv)
    venv = (args.state_dir or default_bench_dir()) / "nannyml-venv"
    site = site_packages(venv) if venv.exists() else None
    streams = [s for s in load_streams(site, quick=False) if s.labelled and s.task == "classification"]
    print(json.dumps({lag: {s.name: summary(s, lag) for s in streams} for lag in args.lag}, indent=1))


if __name__ == "__main__":
    main()
