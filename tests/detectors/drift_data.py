"""Builders shared by the drift/quality/histogram/runner tests: seeded frames of known distributions."""

from __future__ import annotations

import numpy as np

from detectors.frame import Frame
from detectors.spec import FeatureSpec

CATS = np.array([f"cat_{j}" for j in range(8)], dtype=object)
CAT_P = np.array([0.3, 0.2, 0.15, 0.1, 0.1, 0.08, 0.05, 0.02])


def make_frame(
    rng: np.random.Generator,
    n: int,
    *,
    n_numeric: int = 15,
    n_categorical: int = 5,
    shift: dict[str, float] | None = None,
    missing: float = 0.0,
    t0: float = 0.0,
) -> Frame:
    """``n`` events: numeric x0.. ~ N(shift, 1), categorical c0.. over CATS with CAT_P."""
    shift = shift or {}
    numeric, categorical = {}, {}
    for i in range(n_numeric):
        col = rng.normal(shift.get(f"x{i}", 0.0), 1.0, n)
        if missing:
            col[rng.random(n) < missing] = np.nan
        numeric[f"x{i}"] = col
    for i in range(n_categorical):
        col = CATS[rng.choice(CATS.shape[0], size=n, p=CAT_P)].copy()
        if missing:
            col[rng.random(n) < missing] = None
        categorical[f"c{i}"] = col
    return Frame.from_columns(
        event_id=np.array([f"e{i}" for i in range(n)], dtype=object),
        event_time=t0 + np.arange(n) * 0.01,
        numeric=numeric,
        categorical=categorical,
    )


def feature_specs(n_numeric: int = 15, n_categorical: int = 5) -> tuple[FeatureSpec, ...]:
    return tuple(
        [FeatureSpec(name=f"x{i}", kind="numeric") for i in range(n_numeric)]
        + [FeatureSpec(name=f"c{i}", kind="categorical") for i in range(n_categorical)]
    )
