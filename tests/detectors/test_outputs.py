"""Output and label columns of a reference file (detectors.outputs)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from detectors.outputs import OutputColumns, read_reference_rows
from detectors.reference import ReferenceDataError
from detectors.spec import FeatureSpec

FEATS = [FeatureSpec(name="x", kind="numeric"), FeatureSpec(name="c", kind="categorical")]


def _csv(tmp_path, **cols):
    path = tmp_path / "ref.csv"
    pd.DataFrame({"x": [0.1, 0.2, 0.3], "c": ["a", "b", "a"], **cols}).to_csv(path, index=False)
    return path


def test_pandas_written_outputs_match_the_events_spelling(tmp_path):
    """pandas writes booleans as True/False and integer labels with NaN as 1.0: the frame spells them as
    the event decoder does ("true", "1"); probabilities become pred_proba over the classes sorted by name."""
    path = _csv(
        tmp_path, pred=[True, False, True], truth=[1.0, np.nan, 0.0], p_true=[0.9, 0.2, 0.6], p_false=[0.1, 0.8, 0.4]
    )
    out = OutputColumns(prediction="pred", probabilities={"true": "p_true", "false": "p_false"}, label="truth")
    f = read_reference_rows(path, FEATS, out)
    assert f.pred_label.tolist() == ["true", "false", "true"]
    assert f.label.tolist() == ["1", None, "0"]
    assert f.classes == ("false", "true")
    np.testing.assert_allclose(f.pred_proba, [[0.1, 0.9], [0.8, 0.2], [0.4, 0.6]])
    assert sorted(f.numeric) == ["x"] and sorted(f.categorical) == ["c"]  # outputs are not features


def test_regression_outputs_and_labels_are_numbers(tmp_path):
    path = _csv(tmp_path, yhat=[1.5, 2.5, 3.5], y=[1.0, 2.0, 4.0])
    f = read_reference_rows(path, FEATS, OutputColumns(prediction="yhat", label="y"), "regression")
    assert f.pred_value.tolist() == [1.5, 2.5, 3.5] and f.label.tolist() == [1.0, 2.0, 4.0]
    assert f.pred_label is None


def test_problems_name_the_file_and_column(tmp_path):
    path = _csv(tmp_path, p1=[0.5, 1.5, 0.2], p0=[0.5, 0.0, 0.8])
    with pytest.raises(
        ReferenceDataError,
        match=r"ref.csv: column 'p1' holds a probability outside \[0, 1\] "
        r"in row 2",
    ):
        read_reference_rows(path, FEATS, OutputColumns(probabilities={"1": "p1", "0": "p0"}))
    with pytest.raises(ReferenceDataError, match=r"missing column\(s\) 'label_col'"):
        read_reference_rows(path, FEATS, OutputColumns(label="label_col"))
    with pytest.raises(ReferenceDataError, match="also declared as features"):
        read_reference_rows(path, FEATS, OutputColumns(label="c"))


def test_monitor_config_declares_the_columns(tmp_path):
    from streams.worker.monitors import ConfigError, parse_monitors

    base = {"model_id": "m", "features": [{"name": "x", "kind": "numeric"}]}
    cfg = parse_monitors(
        {
            "models": [
                {
                    **base,
                    "reference": {
                        "file": "r.csv",
                        "prediction": "pred",
                        "label": "y",
                        "probabilities": {"a": "pa", "b": "pb"},
                    },
                }
            ]
        }
    )
    assert cfg.models[0].reference.outputs().columns == ["pred", "pa", "pb", "y"]
    # CBPE's labelled rows without a labelled file: the reference period's labels (first_n), at least 1000
    m = parse_monitors({"models": [{**base, "reference": {"first_n": 20000}}]}).models[0]
    assert m.performance.rows(m.reference) == 20000
    m = parse_monitors(
        {"models": [{**base, "reference": {"rolling": True}, "performance": {"calibration_rows": 300}}]}
    ).models[0]
    assert m.performance.rows(m.reference) == 300
    with pytest.raises(ConfigError, match=r"models\[0\].reference: .*set file"):
        parse_monitors({"models": [{**base, "reference": {"first_n": 100, "label": "y"}}]})
    with pytest.raises(ConfigError, match="different columns"):
        parse_monitors({"models": [{**base, "reference": {"file": "r.csv", "prediction": "y", "label": "y"}}]})
    with pytest.raises(ConfigError, match=r"impact.declared: \['nope'\]"):
        parse_monitors({"models": [{**base, "impact": {"declared": {"nope": 1.0}}}]})
