"""Model outputs and true labels in a file of reference rows.

A reference file holds the features of past events; it may also hold what the
model answered for them and what turned out to be true. With those columns
declared (``reference:`` in the monitor config, :class:`OutputColumns`), a
``file`` reference runs everything a ``first_n`` one does, and more:

* prediction drift and feature impact need the served outputs (predicted
  class, class probabilities, score or regression value);
* CBPE needs labelled rows with probabilities to calibrate on
  (:func:`detectors.performance.fit_calibration`), and feature impact can be
  measured against the labels.

The columns are read by :func:`detectors.reference.read_rows` as extra
columns, so every format it knows applies to them too, and class names are
read as the event decoder reads predicted labels (:mod:`detectors.values`):
a pandas CSV's ``True`` is the events' ``true``, ``1.0`` their ``1``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from detectors.frame import Frame
from detectors.reference import ReferenceDataError, read_rows
from detectors.spec import FeatureSpec

__all__ = ["OutputColumns", "read_reference_rows"]


@dataclass(frozen=True)
class OutputColumns:
    """Which columns of a reference file hold the model's outputs and the true labels.

    ``prediction``: the served class (classification) or value (regression);
    ``probabilities``: class -> column of its probability; ``score``: a numeric
    score (regression, or a classifier's single score); ``label``: the true
    label (class, or number for regression). All optional.
    """

    prediction: str | None = None
    probabilities: dict[str, str] = field(default_factory=dict)
    score: str | None = None
    label: str | None = None

    @property
    def columns(self) -> list[str]:
        """Every declared column name (in a stable order, no duplicates)."""
        cols = [self.prediction, *self.probabilities.values(), self.score, self.label]
        return list(dict.fromkeys(c for c in cols if c))

    def __bool__(self) -> bool:
        return bool(self.columns)


def read_reference_rows(
    path: str | Path,
    features: Sequence[FeatureSpec],
    outputs: OutputColumns | None,
    task: Literal["classification", "regression"] = "classification",
) -> Frame:
    """The reference rows of ``path`` with the declared outputs and labels attached to the frame
    (``pred_label``, ``pred_proba`` + ``classes`` sorted by name as events carry them, ``pred_value``,
    ``label``). Raises :class:`ReferenceDataError` naming the file and the missing or unparsable column."""
    if not outputs:
        return read_rows(path, features)
    names = {f.name for f in features}
    clash = [c for c in outputs.columns if c in names]
    if clash:
        raise ReferenceDataError(f"{path}: output/label column(s) {clash} are also declared as features")
    numeric_cols = set(outputs.probabilities.values()) | ({outputs.score} if outputs.score else set())
    if task == "regression":
        numeric_cols |= {c for c in (outputs.prediction, outputs.label) if c}
    extra = [FeatureSpec(name=c, kind="numeric" if c in numeric_cols else "categorical") for c in outputs.columns]
    rows = read_rows(path, [*features, *extra])
    numeric = {k: v for k, v in rows.numeric.items() if k in names}
    categorical = {k: v for k, v in rows.categorical.items() if k in names}
    col = {**rows.numeric, **rows.categorical}
    pred_label = pred_value = label = proba = None
    classes: tuple[str, ...] = ()
    if outputs.prediction:
        if task == "regression":
            pred_value = col[outputs.prediction]
        else:
            pred_label = col[outputs.prediction]
    if outputs.score and pred_value is None:
        pred_value = col[outputs.score]
    if outputs.probabilities:
        classes = tuple(sorted(str(c) for c in outputs.probabilities))
        proba = np.column_stack([col[outputs.probabilities[c]] for c in classes]).astype(np.float64)
        bad = np.isfinite(proba) & ((proba < 0) | (proba > 1))
        if bad.any():
            r, j = (int(x[0]) for x in np.nonzero(bad))
            raise ReferenceDataError(
                f"{path}: column {outputs.probabilities[classes[j]]!r} holds a probability "
                f"outside [0, 1] in row {r + 1}: {proba[r, j]!r}"
            )
    if outputs.label:
        label = col[outputs.label]
    return Frame.from_columns(
        event_id=rows.event_id,
        event_time=rows.event_time,
        numeric=numeric,
        categorical=categorical,
        type_error={k: v for k, v in rows.type_error.items() if k in names},
        pred_label=pred_label,
        pred_proba=proba,
        classes=classes,
        pred_value=pred_value,
        label=label,
    )
