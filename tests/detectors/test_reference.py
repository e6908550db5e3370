"""Reference: precomputed parts, segments, serialisation, and files of rows with clear errors."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest

from detectors.frame import Frame
from detectors.reference import (
    OTHER,
    Reference,
    ReferenceDataError,
    WindowColumns,
    lookup,
    read_rows,
    safe_label,
    segment_tag,
)
from detectors.spec import DriftSpec, FeatureSpec
from detectors.univariate import univariate_drift
from tests.detectors.drift_data import feature_specs, make_frame

SPECS = (
    FeatureSpec(name="age", kind="numeric"),
    FeatureSpec(name="income", kind="numeric"),
    FeatureSpec(name="color", kind="categorical"),
)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(5)


def _frame(rng, n=400):
    age = rng.normal(40, 10, n)
    age[::10] = np.nan
    color = np.array(["red", "green", "blue"], dtype=object)[rng.integers(0, 3, n)]
    color[::7] = None
    return Frame.from_columns(
        event_id=np.arange(n).astype(str),
        event_time=np.zeros(n),
        numeric={"age": age, "income": rng.exponential(1000, n)},
        categorical={"color": color},
    )


def test_precomputed_parts(rng):
    f = _frame(rng)
    ref = Reference.from_frame(f, SPECS, bins=5, top_k=2)
    age = ref.numeric["age"]
    valid = f.numeric["age"][~np.isnan(f.numeric["age"])]
    np.testing.assert_array_equal(age.values, np.sort(valid))
    assert age.n_missing == 40 and age.n == 360
    np.testing.assert_allclose(age.edges, np.quantile(valid, [0.2, 0.4, 0.6, 0.8]))
    exp = np.histogram(valid, bins=np.concatenate(([-np.inf], age.edges, [np.inf])))[0]
    np.testing.assert_array_equal(age.counts, exp)
    color = ref.categorical["color"]
    present = f.categorical["color"][f.categorical["color"] != None]  # noqa: E711 - elementwise over an object array, independent of not_none()
    cats, counts = np.unique(present.astype(str), return_counts=True)
    assert color.categories.tolist() == cats.tolist() and color.counts.tolist() == counts.tolist()
    assert color.n_missing == int((f.categorical["color"] == None).sum())  # noqa: E711 - elementwise over an object array, independent of not_none()
    order = np.lexsort((cats, -counts))
    assert color.top.tolist() == cats[order][:2].tolist()
    assert color.top_counts.tolist() == counts[order][:2].tolist() + [counts[order][2]]


def test_constant_and_absent_features(rng):
    n = 50
    f = Frame.from_columns(event_id=np.arange(n).astype(str), event_time=np.zeros(n), numeric={"age": np.full(n, 3.0)})
    ref = Reference.from_frame(f, SPECS)
    assert ref.numeric["age"].edges.tolist() == [3.0]
    assert ref.numeric["age"].counts.tolist() == [0, 50]
    assert ref.numeric["income"].n == 0 and ref.numeric["income"].n_missing == 50
    assert ref.categorical["color"].n == 0
    # an untestable feature is skipped, not an error
    assert set(univariate_drift(f, ref, DriftSpec()).skipped) == {"income", "color"}


def test_bytes_roundtrip_is_exact_and_pickle_free(rng):
    specs = feature_specs(3, 2)
    ref = Reference.from_frame(
        make_frame(rng, 2000, n_numeric=3, n_categorical=2),
        specs,
        segments=("c0",),
        segment_top_k=3,
        min_segment_rows=100,
        bins=7,
    )
    blob = ref.to_bytes()
    names = zipfile.ZipFile(io.BytesIO(blob)).namelist()
    assert all(name.endswith(".npy") for name in names)
    back = Reference.from_bytes(blob)
    assert back.features == ref.features and back.n_rows == ref.n_rows and back.bins == 7
    assert list(back.segments) == list(ref.segments) and back.segment_values == ref.segment_values
    for a, b in [(ref, back)] + [(ref.segments[t], back.segments[t]) for t in ref.segments]:
        for name in a.numeric:
            for attr in ("values", "edges", "counts"):
                np.testing.assert_array_equal(getattr(a.numeric[name], attr), getattr(b.numeric[name], attr))
        for name in a.categorical:
            for attr in ("categories", "counts", "top", "top_counts"):
                np.testing.assert_array_equal(getattr(a.categorical[name], attr), getattr(b.categorical[name], attr))
    w = make_frame(rng, 500, n_numeric=3, n_categorical=2, shift={"x1": 0.3})
    assert univariate_drift(w, ref, DriftSpec()) == univariate_drift(w, back, DriftSpec())
    assert len(Reference.from_bytes(ref.to_bytes(compress=False)).segments) == len(ref.segments)


def test_from_bytes_rejects_foreign_data():
    with pytest.raises(ReferenceDataError, match="not a serialised driftwatch reference"):
        Reference.from_bytes(b"garbage")
    buf = io.BytesIO()
    np.savez(buf, meta=np.frombuffer(b'{"format": "other"}', dtype=np.uint8))
    with pytest.raises(ReferenceDataError, match="format='other'"):
        Reference.from_bytes(buf.getvalue())


def test_segments_are_bounded_and_share_the_parent_bins(rng):
    specs = feature_specs(2, 2)
    f = make_frame(rng, 3000, n_numeric=2, n_categorical=2)
    ref = Reference.from_frame(f, specs, segments=("c0",), segment_top_k=3, min_segment_rows=100)
    values = ref.segment_values["c0"]
    assert values == ("cat_0", "cat_1", "cat_2")  # the 3 most frequent (CAT_P)
    assert list(ref.segments) == [segment_tag("c0", v) for v in values] + [f"c0={OTHER}"]
    col = f.categorical["c0"]
    sub = ref.segments["c0=cat_1"]
    assert sub.n_rows == int((col == "cat_1").sum())
    assert ref.segments[f"c0={OTHER}"].n_rows == int(np.isin(col, values, invert=True).sum())
    np.testing.assert_array_equal(sub.numeric["x0"].edges, ref.numeric["x0"].edges)
    np.testing.assert_array_equal(sub.categorical["c1"].top, ref.categorical["c1"].top)
    masks = dict(ref.segment_masks("c0", np.array(["cat_2", None, "zzz", "cat_0"], dtype=object)))
    assert masks["c0=cat_2"].tolist() == [True, False, False, False]
    assert masks[f"c0={OTHER}"].tolist() == [False, False, True, False]  # missing: no segment
    with pytest.raises(ValueError, match="categorical"):
        Reference.from_frame(f, specs, segments=("x0",))


def test_segments_with_too_few_reference_rows_are_dropped(rng):
    specs = feature_specs(1, 1)
    f = make_frame(rng, 400, n_numeric=1, n_categorical=1)
    ref = Reference.from_frame(f, specs, segments=("c0",), segment_top_k=8, min_segment_rows=50)
    counts = {v: int((f.categorical["c0"] == v).sum()) for v in ref.segment_values["c0"]}
    assert all(c >= 50 for c in counts.values())
    assert "c0=cat_7" not in ref.segments  # p = 0.02: ~8 rows


def test_category_codes_by_hash_equal_codes_by_string(rng):
    specs = feature_specs(0, 1)
    ref = Reference.from_frame(make_frame(rng, 500, n_numeric=0, n_categorical=1), specs, top_k=3)
    cref = ref.categorical["c0"]
    values = np.array(["cat_3", None, "new_b", "cat_0", "new_a", "new_b", "cat_7", None], dtype=object)
    # fresh string objects, as a JSON decoder makes them
    values = np.array([None if v is None else "".join(v) for v in values], dtype=object)
    frame = Frame.from_columns(event_id=np.arange(8).astype(str), event_time=np.zeros(8), categorical={"c0": values})
    k = cref.categories.shape[0]
    present = np.array([v for v in values if v is not None], dtype=str)
    by_string = lookup(cref.categories, present)
    codes, extra = WindowColumns(frame).category_codes("c0", cref)
    assert extra == 2 and codes.shape == (6,)
    np.testing.assert_array_equal(codes[by_string >= 0], by_string[by_string >= 0])
    new = codes[by_string < 0]
    assert set(new.tolist()) == {k, k + 1} and new[0] == new[2]  # new_b twice, one code
    # colliding reference hashes: falls back to strings, same result
    cref._hash_index = (np.zeros(2, dtype=np.int64), np.arange(2), True)
    codes2, extra2 = WindowColumns(frame).category_codes("c0", cref)
    assert extra2 == 2
    np.testing.assert_array_equal(codes2[by_string >= 0], codes[by_string >= 0])
    # histogram bins: top-3 categories, everything else (also unseen) in __other__
    bins = cref.top_bins(codes)
    top = cref.top.tolist()
    exp = [top.index(v) if v in top else 3 for v in present]
    assert bins.tolist() == exp


def test_safe_labels():
    assert safe_label("tab\there") == "tab?here"
    long_a, long_b = "a" * 80 + "1", "a" * 80 + "2"
    assert safe_label(long_a) != safe_label(long_b) and len(safe_label(long_a)) == 64


# -- files of rows ---------------------------------------------------------------------------


def test_csv_parquet_and_npz_give_the_same_reference(tmp_path, rng):
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = 120
    age = np.round(rng.normal(40, 10, n), 3)
    income = np.round(rng.exponential(1000, n), 2)
    color = np.array(["red", "green", "blue"])[rng.integers(0, 3, n)]
    age_txt = age.astype(str).astype(object)
    age_txt[3] = ""  # missing
    age_txt[4] = "NA"
    color_txt = color.astype(object)
    color_txt[5] = ""
    lines = ["id,age,income,color"] + [
        f"{i},{a},{b},{c}" for i, (a, b, c) in enumerate(zip(age_txt, income, color_txt))
    ]
    (tmp_path / "ref.csv").write_text("\n".join(lines) + "\n")
    age_m = age.copy()
    age_m[[3, 4]] = np.nan
    color_m = color.astype(object)
    color_m[5] = None
    pq.write_table(pa.table({"age": age_m, "income": income, "color": list(color_m)}), tmp_path / "ref.parquet")
    np.savez(tmp_path / "ref.npz", age=age_m, income=income, color=np.where(color_m == None, "", color_m).astype(str))  # noqa: E711 - elementwise over an object array, independent of not_none()
    refs = [Reference.from_file(tmp_path / f"ref.{ext}", SPECS) for ext in ("csv", "parquet", "npz")]
    for r in refs:
        assert r.n_rows == n and r.numeric["age"].n_missing == 2
        assert r.categorical["color"].n_missing == 1
        np.testing.assert_array_equal(r.numeric["age"].values, refs[0].numeric["age"].values)
        np.testing.assert_array_equal(r.numeric["income"].values, np.sort(income))
        np.testing.assert_array_equal(r.categorical["color"].counts, refs[0].categorical["color"].counts)
    assert refs[0].source.endswith("ref.csv")


def test_missing_column_is_named(tmp_path):
    p = tmp_path / "ref.csv"
    p.write_text("age,colour\n1,red\n")
    with pytest.raises(ReferenceDataError) as e:
        read_rows(p, SPECS)
    msg = str(e.value)
    assert str(p) in msg and "'income' (numeric)" in msg and "'color' (categorical)" in msg
    assert "colour" in msg  # what is there


def test_non_numeric_value_is_named_with_its_row(tmp_path):
    p = tmp_path / "ref.csv"
    p.write_text("age,income,color\n1,2,red\n3,lots,blue\n")
    with pytest.raises(
        ReferenceDataError,
        match=r"ref\.csv: column 'income' is numeric but row 2 "
        r"holds the non-numeric value 'lots'",
    ):
        read_rows(p, SPECS)


def test_non_numeric_parquet_and_npz_columns(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"age": ["1", "x"], "income": [1.0, 2.0], "color": ["a", "b"]}), tmp_path / "r.parquet")
    with pytest.raises(ReferenceDataError, match=r"r\.parquet: column 'age' is numeric but row 2"):
        read_rows(tmp_path / "r.parquet", SPECS)
    np.savez(tmp_path / "r.npz", age=np.array([1.0]), income=np.array([True]), color=np.array([1.5 + 2j]))
    with pytest.raises(ReferenceDataError, match=r"r\.npz: column 'color' .*dtype complex128"):
        read_rows(tmp_path / "r.npz", SPECS)
    np.savez(tmp_path / "s.npz", age=np.array(["1", "2"]), income=np.array(["1", "x"]), color=np.array(["a", "b"]))
    with pytest.raises(ReferenceDataError, match=r"s\.npz: column 'income' is numeric but row 2"):
        read_rows(tmp_path / "s.npz", SPECS)


@pytest.mark.parametrize(
    "content,match",
    [
        ("", "the file is empty"),
        ("age,income,color\n", "has no rows"),
        ("age,income,color\n1,2\n", "row 1 has 2 cells, the header has 3"),
    ],
)
def test_empty_and_ragged_csv(tmp_path, content, match):
    p = tmp_path / "ref.csv"
    p.write_text(content)
    with pytest.raises(ReferenceDataError, match=match) as e:
        read_rows(p, SPECS)
    assert str(p) in str(e.value)


def test_file_level_errors(tmp_path):
    with pytest.raises(ReferenceDataError, match="not found"):
        read_rows(tmp_path / "nope.csv", SPECS)
    (tmp_path / "ref.xlsx").write_text("x")
    with pytest.raises(ReferenceDataError, match=r"unknown reference file type '\.xlsx'"):
        read_rows(tmp_path / "ref.xlsx", SPECS)
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(ReferenceDataError, match=r"bad\.parquet: not a readable Parquet file"):
        read_rows(tmp_path / "bad.parquet", SPECS)
    np.savez(tmp_path / "obj.npz", age=np.array([1.0]), income=np.array([1.0]), color=np.array(["a"], dtype=object))
    with pytest.raises(ReferenceDataError, match=r"obj\.npz: cannot load without pickle"):
        read_rows(tmp_path / "obj.npz", SPECS)
    np.savez(tmp_path / "len.npz", age=np.zeros(3), income=np.zeros(2), color=np.array(["a"] * 3))
    with pytest.raises(ReferenceDataError, match="different lengths"):
        read_rows(tmp_path / "len.npz", SPECS)
    np.savez(tmp_path / "empty.npz", age=np.zeros(0), income=np.zeros(0), color=np.zeros(0, "<U1"))
    with pytest.raises(ReferenceDataError, match="has no rows"):
        read_rows(tmp_path / "empty.npz", SPECS)


# -- the files users write: gzipped CSV, JSON lines, pandas-written CSV and Parquet ----------------------------

USER_SPECS = (
    FeatureSpec(name="age", kind="numeric"),
    FeatureSpec(name="churned", kind="boolean"),
    FeatureSpec(name="plan", kind="categorical"),
    FeatureSpec(name="seats", kind="categorical"),
)


@pytest.fixture
def user_table(rng):
    """A pandas DataFrame as users have them: a bool column, an int category with gaps (float64 in pandas)."""
    import pandas as pd

    n = 300
    seats = rng.integers(1, 4, n).astype(float)
    seats[::9] = np.nan
    age = np.round(rng.normal(40, 10, n), 2)
    age[::11] = np.nan
    return pd.DataFrame(
        {
            "age": age,
            "churned": rng.random(n) < 0.3,
            "plan": np.array(["free", "pro", "team"], dtype=object)[rng.integers(0, 3, n)],
            "seats": seats,
            "unused": np.arange(n),
        }
    )


def _same_reference(a: Reference, b: Reference) -> None:
    assert a.n_rows == b.n_rows
    np.testing.assert_array_equal(a.numeric["age"].values, b.numeric["age"].values)
    for name in ("churned", "plan", "seats"):
        ca, cb = a.categorical[name], b.categorical[name]
        assert ca.categories.tolist() == cb.categories.tolist(), name
        assert ca.counts.tolist() == cb.counts.tolist() and ca.n_missing == cb.n_missing, name


def test_every_file_type_users_write_gives_one_reference(tmp_path, user_table):
    """pandas' to_csv (plain and .gz), to_parquet and to_json(lines) of one table: one reference, with the
    events' spelling of the values (true/false, 1/2/3)."""
    df = user_table
    df.to_csv(tmp_path / "r.csv", index=False)
    df.to_csv(tmp_path / "r.csv.gz", index=False)  # pandas compresses by the name
    df.to_parquet(tmp_path / "r.parquet", index=False)
    df.to_json(tmp_path / "r.jsonl", orient="records", lines=True)
    df.to_json(tmp_path / "r.jsonl.gz", orient="records", lines=True)
    assert (tmp_path / "r.csv").read_text().count("True") > 0  # pandas writes True/False
    refs = {
        p: Reference.from_file(tmp_path / p, USER_SPECS)
        for p in ("r.csv", "r.csv.gz", "r.parquet", "r.jsonl", "r.jsonl.gz")
    }
    first = refs["r.csv"]
    assert first.categorical["churned"].categories.tolist() == ["false", "true"]
    assert first.categorical["seats"].categories.tolist() == ["1", "2", "3"]
    assert first.categorical["seats"].n_missing == int(df["seats"].isna().sum())
    assert first.numeric["age"].n_missing == int(df["age"].isna().sum())
    assert first.categorical["churned"].counts.tolist() == [int((~df["churned"]).sum()), int(df["churned"].sum())]
    for _name, ref in refs.items():
        _same_reference(ref, first)


def test_jsonl_rows_may_be_events(tmp_path):
    """A dump of the inference stream (features under "features") is a reference file too."""
    import orjson

    rows = [
        {"event_id": str(i), "features": {"age": 30 + i, "churned": i % 2 == 0, "plan": "pro", "seats": 2}}
        for i in range(20)
    ]
    (tmp_path / "events.jsonl").write_bytes(b"\n".join(orjson.dumps(r) for r in rows) + b"\n")
    frame = read_rows(tmp_path / "events.jsonl", USER_SPECS)
    assert frame.categorical["churned"].tolist()[:2] == ["true", "false"]
    assert frame.numeric["age"].tolist()[:2] == [30.0, 31.0]


@pytest.mark.parametrize(
    "name,content,match",
    [
        ("bad.csv.gz", b"age,churned\n1,True\n", r"bad\.csv\.gz: not a readable gzip file"),
        ("bad.jsonl", b'{"age": 1}\n{"age": \n', r"bad\.jsonl: line 2 is not JSON"),
        ("list.jsonl", b"[1, 2]\n", r"list\.jsonl: line 1 is not a JSON object"),
        ("cols.jsonl", b'{"age": 1, "churned": true}\n', r"missing column\(s\) 'plan' \(categorical\)"),
        (
            "bool.csv",
            b"age,churned,plan,seats\n1,True,pro,1\n2,maybe,pro,1\n",
            r"bool\.csv: column 'churned' is boolean but row 2 holds the value .*'maybe'",
        ),
        (
            "frac.jsonl",
            b'{"age": 1, "churned": true, "plan": "pro", "seats": 1.5}\n',
            r"frac\.jsonl: column 'seats' is categorical but row 1 holds a float",
        ),
        ("ref.xlsx", b"x", r"unknown reference file type '\.xlsx'"),
    ],
)
def test_what_the_worker_rejects_is_named(tmp_path, name, content, match):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ReferenceDataError, match=match):
        read_rows(tmp_path / name, USER_SPECS)
