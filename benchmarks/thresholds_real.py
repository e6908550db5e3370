"""Threshold methods on River's annotated real change-point series (no downloads).

Run: ``python -m benchmarks.thresholds_real [--window N] [--json PATH]``

River 0.23 ships the Turing change-point data sets (TCPD) in
``river/drift/datasets``: each real series with the change points several human
annotators marked. A change is *known* where at least half of the annotators
marked a point within ``TOLERANCE`` steps of each other. Between two known
changes the stream has no known change, so every episode is:

* reference = the first ``ref_windows`` windows after a known change (in time order);
* the following windows up to the next known change: *no change known* —
  every flag there is a false alarm;
* the windows from the next known change on (``horizon`` windows): a detection
  delay is the number of windows from the one containing the change to the first flag.

Each threshold method of :mod:`detectors.thresholds` runs through
:func:`detectors.univariate.judge_windows` (the worker's code path). ``p_value``
is the classical per-feature KS test with Bonferroni — the verdicts of
alibi-detect's ``TabularDrift`` (tests/detectors/test_univariate.py checks the
two agree window for window).

:func:`known_changes`, :func:`episodes` and :func:`river_streams` are shared
with ``driftwatch bench real``.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass

import numpy as np

from detectors.thresholds import METHODS
from detectors.univariate import judge_windows

TOLERANCE = 10
"""Steps within which annotators' marks count as the same change."""


@dataclass(frozen=True)
class Series:
    """One real series: values (rows × features, time order) and its annotators' change points."""

    name: str
    values: np.ndarray
    annotations: dict[str, list[int]]


def river_streams() -> list[Series]:
    """River's annotated real series that ship in its package (columns as monitored features).

    Brent crude oil is left out: its annotations index the 500-point weekly TCPD
    series, the file River ships holds 8,195 daily prices. UK coal employment
    (105 yearly points) is too short for a reference and a window.
    """
    from river.drift import datasets as D

    def rows(ds, cols):
        out = []
        for x, y in ds:
            d = {**x, **(y if isinstance(y, dict) else {"y": y})}
            out.append([float(d[c]) for c in cols])
        return np.asarray(out, dtype=np.float64)

    spec = [
        (D.Occupancy, ["V1", "V2", "V3", "V4"]),
        (D.RunLog, ["Pace"]),
        (D.Apple, ["Close", "Volume"]),
        (D.Bitcoin, ["y"]),
        (D.AirlinePassengers, ["y"]),
    ]
    out = []
    for cls, cols in spec:
        ds = cls()
        out.append(Series(cls.__name__, rows(ds, cols), {k: list(v) for k, v in ds.annotations.items()}))
    return out


def known_changes(annotations: dict[str, list[int]], tolerance: int = TOLERANCE) -> list[int]:
    """Change points marked by at least half of the annotators (within ``tolerance``), sorted.

    Each point is the median of the marks that support it; marks closer than
    ``tolerance`` to an accepted point are merged into it.
    """
    n = len(annotations)
    marks = sorted({(p, a) for a, pts in annotations.items() for p in pts})
    out: list[int] = []
    for p, _ in marks:
        if out and p - out[-1] <= tolerance:
            continue
        near = {a: q for q, a in marks if abs(q - p) <= tolerance and q >= p}
        if len(near) * 2 >= n:
            out.append(int(np.median(list(near.values()))))
    return out


@dataclass(frozen=True)
class Episode:
    """A reference, the no-change windows after it, and the windows after the next change."""

    ref: slice
    quiet: list[slice]  # no change known
    change: int | None  # index of the next known change
    after: list[slice]  # windows from the one containing the change


def episodes(n: int, changes: list[int], window: int, ref_windows: int, horizon: int = 5) -> list[Episode]:
    """Episodes of ``window``-sized windows between known changes (see the module docstring)."""
    bounds = [0] + changes + [n]
    out = []
    for k in range(len(bounds) - 1):
        start, stop = bounds[k], bounds[k + 1]
        ref = slice(start, start + ref_windows * window)
        if ref.stop + window > stop:
            continue
        quiet = [slice(s, s + window) for s in range(ref.stop, stop - window + 1, window)]
        nxt = stop if stop < n else None
        after = []
        if nxt is not None:
            first = quiet[-1].stop if quiet else ref.stop  # the window containing the change
            after = [slice(s, s + window) for s in range(first, n - window + 1, window)][:horizon]
        out.append(Episode(ref, quiet, nxt, after))
    return out


def nannyml_flags(series: list[Series], window: int, ref_windows: int, python: str) -> dict:
    """NannyML's univariate-drift alerts on the same episodes: ``{(series, episode): {method: flags}}``.

    NannyML runs in its own virtualenv (``python``), on the episodes exported as .npz.
    """
    import subprocess
    import tempfile
    from pathlib import Path

    from streams.lifetime import die_with_parent

    with tempfile.TemporaryDirectory() as tmp:
        for s in series:
            for k, e in enumerate(episodes(len(s.values), known_changes(s.annotations), window, ref_windows)):
                wins = {f"win_{i}": s.values[w] for i, w in enumerate(e.quiet + e.after)}
                np.savez(Path(tmp) / f"{s.name}__{k}.npz", ref=s.values[e.ref], **wins)
        script = Path(__file__).with_name("nannyml_univariate.py")
        out = subprocess.run(
            [python, str(script), tmp], check=True, capture_output=True, text=True, preexec_fn=die_with_parent()
        ).stdout
    return {tuple(k.rsplit("__", 1)[0:1]) + (int(k.rsplit("__", 1)[1]),): v for k, v in json.loads(out).items()}


def measure(
    series: list[Series], window: int, ref_windows: int, methods=METHODS, peers: dict | None = None, **threshold
) -> dict:
    """False alarms per 100 no-change windows and delays (windows) per method and series.

    ``peers``: :func:`nannyml_flags` output, scored the same way as ``nannyml_<method>``.
    """
    result: dict = {}
    peer_methods = sorted({m for v in (peers or {}).values() for m in v})
    for s in series:
        changes = known_changes(s.annotations)
        eps = episodes(len(s.values), changes, window, ref_windows)
        row: dict = {"known_changes": changes, "episodes": len(eps)}
        for method in list(methods) + [f"nannyml_{m}" for m in peer_methods]:
            fa = quiet = 0
            delays: list[int | None] = []
            for k, e in enumerate(eps):
                wins = e.quiet + e.after
                if method.startswith("nannyml_"):
                    flags = peers[(s.name, k)][method[len("nannyml_") :]]
                else:
                    res = judge_windows(s.values[e.ref], [s.values[w] for w in wins], method, **threshold)
                    flags = [r.drift for r in res]
                fa += sum(flags[: len(e.quiet)])
                quiet += len(e.quiet)
                if e.after:
                    hit = [i for i, f in enumerate(flags[len(e.quiet) :]) if f]
                    delays.append(hit[0] if hit else None)
            row[method] = {
                "false_alarms": fa,
                "quiet_windows": quiet,
                "fa_per_100": round(100 * fa / quiet, 1) if quiet else None,
                "delays": delays,
            }
        result[s.name] = row
    return result


def summary(result: dict) -> dict:
    """Pooled over series: false alarms per 100 quiet windows, changes found, mean delay."""
    out = {}
    methods = [k for k in next(iter(result.values())) if isinstance(next(iter(result.values()))[k], dict)]
    for m in methods:
        fa = sum(r[m]["false_alarms"] for r in result.values())
        q = sum(r[m]["quiet_windows"] for r in result.values())
        d = [x for r in result.values() for x in r[m]["delays"]]
        found = [x for x in d if x is not None]
        out[m] = {
            "fa_per_100": round(100 * fa / q, 1) if q else None,
            "quiet_windows": q,
            "changes": len(d),
            "found": len(found),
            "mean_delay": round(float(np.mean(found)), 2) if found else None,
        }
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--window", type=int, default=10)
    ap.add_argument("--ref-windows", type=int, default=8)
    ap.add_argument("--json", default=None)
    ap.add_argument(
        "--nannyml-python",
        default=None,
        help="python of a virtualenv with nannyml: also score NannyML's univariate drift",
    )
    ap.add_argument(
        "--bench-streams",
        metavar="NANNYML_VENV",
        default=None,
        help="instead: the methods on driftwatch bench real's streams (NannyML's data from this venv)",
    )
    a = ap.parse_args(argv)
    if a.bench_streams:
        from pathlib import Path

        from benchmarks.real_streams import load_streams, site_packages

        streams = load_streams(
            site_packages(Path(a.bench_streams)),
            quick=False,
            only=["car_loan", "multiclass", "census_ma", "phishing_concept", "segment_shift"],
        )
        print(json.dumps(measure_bench_streams(streams), indent=1))
        return
    series = river_streams()
    peers = nannyml_flags(series, a.window, a.ref_windows, a.nannyml_python) if a.nannyml_python else None
    res = measure(series, a.window, a.ref_windows, peers=peers)
    out = {"window": a.window, "ref_windows": a.ref_windows, "per_series": res, "summary": summary(res)}
    text = json.dumps(out, indent=1, default=lambda x: None if isinstance(x, float) and math.isnan(x) else x)
    if a.json:
        with open(a.json, "w") as fh:
            fh.write(text)
    print(json.dumps(out["summary"], indent=1))


def measure_bench_streams(streams, methods=METHODS, **threshold) -> dict:
    """The threshold methods on ``driftwatch bench real``'s streams (:mod:`benchmarks.real_streams`).

    Reference = the stream's first ``ref_n`` events (its ``first_n``), windows of its
    ``window`` events after it; windows that end before the first known change after the
    reference have no known change (all of them when ``changes == []``; streams with
    ``changes is None`` are skipped). Delay: windows from the one holding the change to
    the first flag (None: not found).
    """
    out: dict = {}
    for s in streams:
        if s.changes is None:
            continue
        kinds = {c: "categorical" for c in s.categorical}
        cols = {
            c: (
                s.features[c].to_numpy(dtype=float)
                if c in s.numeric
                else s.features[c].astype(object).where(s.features[c].notna(), None).to_numpy()
            )
            for c in s.numeric + s.categorical
        }
        ref = {c: v[: s.ref_n] for c, v in cols.items()}
        starts = list(range(s.ref_n, s.n - s.window + 1, s.window))
        wins = [{c: v[a : a + s.window] for c, v in cols.items()} for a in starts]
        change = s.first_change_after_reference()
        quiet = [i for i, a in enumerate(starts) if change is None or a + s.window <= change]
        at = next((i for i, a in enumerate(starts) if change is not None and a + s.window > change), None)
        row: dict = {"window": s.window, "ref_n": s.ref_n, "windows": len(starts), "change": change}
        for m in methods:
            flags = [r.drift for r in judge_windows(ref, wins, m, kinds=kinds, **threshold)]
            fa = sum(flags[i] for i in quiet)
            hit = None if at is None else next((i - at for i in range(at, len(flags)) if flags[i]), None)
            row[m] = {
                "fa_per_100": round(100 * fa / len(quiet), 1) if quiet else None,
                "quiet_windows": len(quiet),
                "delay": hit,
            }
        out[s.name] = row
    return out


if __name__ == "__main__":
    main()
