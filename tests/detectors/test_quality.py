"""Data quality counts against a plain per-value recount."""

from __future__ import annotations

import math

import numpy as np
import pytest

from detectors.frame import Frame
from detectors.quality import data_quality, window_totals
from detectors.spec import FeatureSpec


@pytest.fixture
def frame() -> Frame:
    rng = np.random.default_rng(9)
    n = 1000
    age = rng.normal(50, 30, n)
    age[rng.random(n) < 0.05] = np.nan  # missing
    age_te = rng.random(n) < 0.03
    age[age_te] = np.nan  # type errors are NaN in the column too
    color = np.array(["red", "green", "blue", "mauve"], dtype=object)[rng.integers(0, 4, n)]
    color_te = rng.random(n) < 0.02
    color[rng.random(n) < 0.04] = None
    color[color_te] = None
    return Frame.from_columns(
        event_id=np.arange(n).astype(str),
        event_time=np.zeros(n),
        numeric={"age": age, "score": rng.uniform(0, 1, n)},
        categorical={"color": color},
        type_error={"age": age_te, "color": color_te},
    )


SPECS = [
    FeatureSpec(name="age", kind="numeric", min=0, max=100, nullable=False),
    FeatureSpec(name="score", kind="numeric"),
    FeatureSpec(name="color", kind="categorical", allowed=["red", "green", "blue"]),
    FeatureSpec(name="absent", kind="numeric", nullable=False),
    FeatureSpec(name="absent_cat", kind="categorical"),
]


def _recount(frame: Frame, spec: FeatureSpec) -> dict[str, int]:
    """Independent per-value recount (plain Python; fine in a test)."""
    n = len(frame)
    te = frame.type_error.get(spec.name, np.zeros(n, bool))
    col = (frame.numeric if spec.kind == "numeric" else frame.categorical).get(spec.name)
    values = [None] * n if col is None else list(col)
    is_null = [v is None or (isinstance(v, float) and math.isnan(v)) for v in values]
    missing = sum(1 for i in range(n) if is_null[i] and not te[i])
    oor = unknown = 0
    for v, null in zip(values, is_null):
        if null:
            continue
        if spec.kind == "numeric":
            oor += (spec.min is not None and v < spec.min) or (spec.max is not None and v > spec.max)
        elif spec.allowed is not None:
            unknown += v not in spec.allowed
    return {
        "n": n,
        "n_missing": missing,
        "n_type_error": int(np.sum(te)),
        "n_out_of_range": oor,
        "n_unknown_category": unknown,
        "n_null_violation": 0 if spec.nullable else missing,
    }


def test_counts_match_a_plain_recount(frame):
    result = data_quality(frame, SPECS)
    assert [q.feature for q in result] == [s.name for s in SPECS]
    for q, spec in zip(result, SPECS):
        assert q.counts() == _recount(frame, spec), spec.name
    age = result[0]
    assert age.n_out_of_range > 0 and age.n_type_error > 0 and age.n_null_violation == age.n_missing
    assert age.missing_rate == pytest.approx(age.n_missing / 1000)
    assert age.n_valid == 1000 - age.n_missing - age.n_type_error
    assert result[2].n_unknown_category > 0 and result[2].unknown_category_rate < 0.3
    assert result[3].n_missing == 1000 and result[3].null_violation_rate == 1.0


def test_window_totals(frame):
    q = data_quality(frame, SPECS)
    t = window_totals(q)
    assert t["n_missing_cells"] == sum(x.n_missing for x in q)
    assert t["type_error_cell_rate"] == pytest.approx(sum(x.n_type_error for x in q) / 5000)


def test_empty_window():
    f = Frame.from_columns(event_id=np.zeros(0, dtype=object), event_time=np.zeros(0))
    q = data_quality(f, SPECS)
    assert all(x.n == 0 and x.missing_rate == 0.0 for x in q)
    assert window_totals(q)["missing_cell_rate"] == 0.0
