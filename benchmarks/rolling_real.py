"""River's change-point series judged against a ``rolling`` reference, in-process (the worker's functions).

``python -m benchmarks.rolling_real [--history 20 50 100]`` replays each episode of ``driftwatch bench
real``'s River streams (:func:`benchmarks.real_streams.river_episodes`) window by window as the worker does
with ``reference: {rolling: true, rolling_history: H}``: the previous window is the reference, the H
windows before it its history (:func:`detectors.reference.attach_rolling_history`), and a window alarms
when its data drift (:func:`detectors.univariate.univariate_drift`) or its prediction drift
(:func:`detectors.prediction.prediction_drift`) does, at the bench's level (0.01 per verdict family). It
prints, per episode, the false alarms among the quiet windows and the delay after the known change
(:func:`benchmarks.real.windows_summary`), so the band's history length can be chosen without the stack.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from benchmarks.real import windows_summary
from benchmarks.real_streams import Stream, river_episodes
from detectors.advanced import prediction_reference
from detectors.frame import Frame
from detectors.prediction import prediction_drift
from detectors.reference import Reference, attach_reference_frame, attach_rolling_history
from detectors.spec import DriftSpec, FeatureSpec
from detectors.univariate import univariate_drift


def _frames(s: Stream) -> list[Frame]:
    x = s.features[s.numeric].to_numpy(dtype=float)
    w = s.window
    return [
        Frame.from_columns(
            event_id=np.arange(k * w, (k + 1) * w).astype(str),
            event_time=np.arange(k * w, (k + 1) * w, dtype=float),
            numeric={c: x[k * w : (k + 1) * w, i] for i, c in enumerate(s.numeric)},
            categorical={},
            pred_value=None if s.pred_value is None else s.pred_value[k * w : (k + 1) * w],
        )
        for k in range(s.n_windows)
    ]


def rolling_alarms(s: Stream, history: int, level: float = 0.01) -> dict[int, bool]:
    """Per evaluated window (after the episode's first ``ref_n`` events): data or prediction drift."""
    spec = DriftSpec(p_val=level)
    feats = [FeatureSpec(name=c, kind="numeric") for c in s.numeric]
    frames = _frames(s)
    out = {}
    for t in range(s.ref_n // s.window, s.n_windows):
        past = frames[max(0, t - 1 - history) : t]
        ref = attach_reference_frame(Reference.from_frame(past[-1], feats, bins=spec.histogram_bins), past[-1])
        if len(past) > 1:
            attach_rolling_history(ref, past)
        drift = univariate_drift(frames[t], ref, spec).drift
        if s.pred_value is not None:
            drift = drift or prediction_drift(frames[t], prediction_reference(ref), spec).drift
        out[t] = bool(drift)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--history", type=int, nargs="+", default=[100], help="rolling_history values to measure")
    args = ap.parse_args(argv)
    streams = river_episodes(quick=False)
    result = {}
    for h in args.history:
        rows = {}
        for s in streams:
            m = windows_summary(s, rolling_alarms(s, h))
            rows[s.name] = {k: m.get(k) for k in ("no_change_windows", "false_alarms", "delay_windows")}
        result[h] = {"streams": rows, "false_alarms": sum(r["false_alarms"] or 0 for r in rows.values())}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
