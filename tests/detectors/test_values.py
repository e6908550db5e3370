"""detectors.values: one reading of values for the decoder and the reference loader."""

from __future__ import annotations

import numpy as np
import pytest

from detectors.values import parse_categories, parse_feature, parse_numeric


def test_numbers_from_json_and_from_text_agree():
    json_vals, bad = parse_numeric([1, 2.5, None, True, False])
    assert bad is None
    np.testing.assert_array_equal(json_vals, [1.0, 2.5, np.nan, 1.0, 0.0])
    text_vals, bad = parse_numeric(["1", " 2.5 ", "", "True", "false"], text=True)
    assert bad is None
    np.testing.assert_array_equal(text_vals, json_vals)
    for marker in ("NA", "nan", "NaN", "null", "None", "n/a"):
        assert np.isnan(parse_numeric([marker], text=True)[0][0])


def test_wrong_types_become_missing_and_are_marked():
    vals, bad = parse_numeric([1.0, "1.5", [1], None, 10**400])  # a JSON string is not a number
    np.testing.assert_array_equal(vals, [1.0, np.nan, np.nan, np.nan, np.nan])
    assert bad.tolist() == [False, True, True, False, True]
    vals, bad = parse_numeric(["1", "lots", "3"], text=True)
    np.testing.assert_array_equal(vals, [1.0, np.nan, 3.0])
    assert bad.tolist() == [False, True, False]
    cats, bad = parse_categories(["a", 1.5, {"k": 1}, None])
    assert cats.tolist() == ["a", None, None, None] and bad.tolist() == [False, True, True, False]


def test_categories_read_one_way_from_every_source():
    """A pandas CSV's True/False and 1.0, a JSON event's true and 1, a Parquet bool/int column: one value each."""
    from_json, bad = parse_categories([True, False, 1, 2, "red", None])
    assert bad is None and from_json.tolist() == ["true", "false", "1", "2", "red", None]
    from_csv, bad = parse_categories(["True", "False", "1.0", "2", "red", ""], text=True)
    assert bad is None and from_csv.tolist() == from_json.tolist()
    assert parse_categories(np.array([True, False]))[0].tolist() == ["true", "false"]
    assert parse_categories(np.array([1.0, np.nan, 2.0]))[0].tolist() == ["1", None, "2"]
    assert parse_categories(["TRUE", "False", "x"])[0].tolist() == ["true", "false", "x"]
    # an event's string "1.0" stays a string: only a text file loses the types
    assert parse_categories(["1.0"])[0].tolist() == ["1.0"]


@pytest.mark.parametrize(
    "values",
    [
        [True, "true", "True", "TRUE", 1, 1.0, "1", "yes", "Y"],
        np.array([1, 1]),
        np.array([True, True]),
    ],
)
def test_every_spelling_of_true_is_one_boolean(values):
    out, bad = parse_categories(values, boolean=True)
    assert bad is None and set(out.tolist()) == {"true"}


def test_boolean_rejects_what_is_not_a_truth_value():
    out, bad = parse_categories(["false", "0", 0, "maybe", 2, None], boolean=True)
    assert out.tolist() == ["false", "false", "false", None, None, None]
    assert bad.tolist() == [False, False, False, True, True, False]
    out, bad = parse_categories(["yes", "perhaps"], boolean=True, text=True)
    assert out.tolist() == ["true", None] and bad.tolist() == [False, True]


def test_mixed_columns_give_what_each_value_gives_alone():
    rng = np.random.default_rng(0)
    pool = ["a", "True", True, False, 3, 4.0, None, 2.5, "", "b"]
    values = [pool[i] for i in rng.integers(0, len(pool), 500)]
    out, bad = parse_categories(values)
    for i, v in enumerate(values):
        one, one_bad = parse_categories([v])
        assert out[i] == one[0] and bool(bad[i]) == (one_bad is not None), (i, v)


def test_parse_feature_routes_by_kind():
    assert parse_feature(["1"], "numeric", text=True)[0].tolist() == [1.0]
    assert parse_feature([1], "categorical", boolean=True)[0].tolist() == ["true"]
