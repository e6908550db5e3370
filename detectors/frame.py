"""Columnar blocks of inference events: the unit every detector works on.

A :class:`Frame` holds the events of one model version as numpy columns:
numeric features as ``float64`` (NaN where missing or mistyped), categorical
features as ``object`` arrays of ``str`` (``None`` where missing or mistyped),
and a boolean mask per feature marking values that had the wrong type, so data
quality can tell "missing" from "type error". Frames concatenate cheaply, so a
window is a list of decoded batches joined once when it closes.

>>> import numpy as np
>>> f = Frame.from_columns(
...     event_id=np.array(["a", "b"], dtype=object),
...     event_time=np.array([1.0, 2.0]),
...     numeric={"x": np.array([0.5, np.nan])},
...     categorical={"c": np.array(["u", None], dtype=object)},
... )
>>> len(f), concat([f, f]).numeric["x"].shape
(2, (4,))
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(slots=True)
class Frame:
    """Columnar events of one model version (see module docstring)."""

    event_id: np.ndarray  # object[str]
    event_time: np.ndarray  # float64, epoch seconds
    source_id: np.ndarray  # object[str | None]
    numeric: dict[str, np.ndarray] = field(default_factory=dict)  # float64, NaN = missing
    categorical: dict[str, np.ndarray] = field(default_factory=dict)  # object[str | None]
    type_error: dict[str, np.ndarray] = field(default_factory=dict)  # bool, per feature
    pred_label: np.ndarray | None = None  # object[str | None], predicted class
    pred_proba: np.ndarray | None = None  # float64 (n, len(classes)), NaN row if absent
    classes: tuple[str, ...] = ()  # column order of pred_proba
    pred_value: np.ndarray | None = None  # float64: regression value or score
    label: np.ndarray | None = None  # object: the true label (labelled reference rows only; events carry none)
    #: features the monitor does not declare: name -> rows that carried a value (bool); see
    #: :func:`detectors.quality.undeclared_features`. Empty for well-formed traffic.
    unknown: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.event_time.shape[0])

    @classmethod
    def from_columns(
        cls,
        *,
        event_id: np.ndarray,
        event_time: np.ndarray,
        source_id: np.ndarray | None = None,
        numeric: dict[str, np.ndarray] | None = None,
        categorical: dict[str, np.ndarray] | None = None,
        type_error: dict[str, np.ndarray] | None = None,
        pred_label: np.ndarray | None = None,
        pred_proba: np.ndarray | None = None,
        classes: tuple[str, ...] = (),
        pred_value: np.ndarray | None = None,
        label: np.ndarray | None = None,
    ) -> Frame:
        """Build a frame, filling absent optional columns with their empty value."""
        n = int(np.asarray(event_time).shape[0])
        if source_id is None:
            source_id = np.full(n, None, dtype=object)
        numeric = dict(numeric or {})
        categorical = dict(categorical or {})
        te = dict(type_error or {})
        for name in (*numeric, *categorical):
            te.setdefault(name, np.zeros(n, dtype=bool))
        return cls(
            event_id=np.asarray(event_id, dtype=object),
            event_time=np.asarray(event_time, dtype=np.float64),
            source_id=np.asarray(source_id, dtype=object),
            numeric=numeric,
            categorical=categorical,
            type_error=te,
            pred_label=pred_label,
            pred_proba=pred_proba,
            classes=tuple(classes),
            pred_value=pred_value,
            label=label,
        )

    def take(self, idx: np.ndarray | slice) -> Frame:
        """Rows selected by an index array, boolean mask or slice."""

        def sel(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[idx]

        return Frame(
            event_id=self.event_id[idx],
            event_time=self.event_time[idx],
            source_id=self.source_id[idx],
            numeric={k: v[idx] for k, v in self.numeric.items()},
            categorical={k: v[idx] for k, v in self.categorical.items()},
            type_error={k: v[idx] for k, v in self.type_error.items()},
            pred_label=sel(self.pred_label),
            pred_proba=sel(self.pred_proba),
            classes=self.classes,
            pred_value=sel(self.pred_value),
            label=sel(self.label),
            unknown={k: v[idx] for k, v in self.unknown.items()},
        )


def concat(frames: list[Frame]) -> Frame:
    """Join frames of the same model version; columns missing in one become missing values."""
    if not frames:
        raise ValueError("concat needs at least one frame")
    if len(frames) == 1:
        return frames[0]
    lens = [len(f) for f in frames]

    def cat(getter, fill, dtype) -> np.ndarray:
        parts = []
        for f, n in zip(frames, lens):
            a = getter(f)
            parts.append(a if a is not None else np.full(n, fill, dtype=dtype))
        return np.concatenate(parts)

    num_names = list(dict.fromkeys(k for f in frames for k in f.numeric))
    cat_names = list(dict.fromkeys(k for f in frames for k in f.categorical))
    classes = next((f.classes for f in frames if f.classes), ())
    proba = None
    if any(f.pred_proba is not None for f in frames):
        parts = []
        for f, n in zip(frames, lens):
            if f.pred_proba is not None and f.classes == classes:
                parts.append(f.pred_proba)
            else:
                parts.append(np.full((n, len(classes)), np.nan))
        proba = np.concatenate(parts)
    has_label = any(f.pred_label is not None for f in frames)
    has_value = any(f.pred_value is not None for f in frames)
    has_truth = any(f.label is not None for f in frames)
    return Frame(
        event_id=np.concatenate([f.event_id for f in frames]),
        event_time=np.concatenate([f.event_time for f in frames]),
        source_id=np.concatenate([f.source_id for f in frames]),
        numeric={k: cat(lambda f, k=k: f.numeric.get(k), np.nan, np.float64) for k in num_names},
        categorical={k: cat(lambda f, k=k: f.categorical.get(k), None, object) for k in cat_names},
        type_error={k: cat(lambda f, k=k: f.type_error.get(k), False, bool) for k in (*num_names, *cat_names)},
        pred_label=cat(lambda f: f.pred_label, None, object) if has_label else None,
        pred_proba=proba,
        classes=classes,
        pred_value=cat(lambda f: f.pred_value, np.nan, np.float64) if has_value else None,
        label=cat(lambda f: f.label, None, object) if has_truth else None,
        unknown={
            k: cat(lambda f, k=k: f.unknown.get(k), False, bool)
            for k in dict.fromkeys(k for f in frames for k in f.unknown)
        },
    )
