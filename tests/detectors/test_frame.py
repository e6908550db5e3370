"""A frame's dictionary codes change no result: grouping, hashing, source tests and the prediction frame agree
with and without them (the whole detector suite with and without them: tests/streams/worker/test_detector_process.py,
whose child process gets the codes and whose thread does not)."""

from __future__ import annotations

import numpy as np
import pytest

from detectors.adversarial.contrast import source_contrast
from detectors.adversarial.extraction import ExtractionTracker
from detectors.frame import Codes, Frame, TextGroups
from detectors.prediction import prediction_frame
from detectors.reference import WindowColumns, hash_values


def coded(column: np.ndarray) -> Codes:
    """The codes of ``column``, computed independently of the code under test (np.unique on the text)."""
    present = np.array([v is not None for v in column.tolist()])
    values = np.empty(0, dtype=object)
    codes = np.zeros(column.shape[0], dtype=np.uint16)
    if present.any():
        uniq, inv = np.unique(column[present].astype(str), return_inverse=True)
        values = np.array([*uniq.tolist(), None], dtype=object)
        codes[present] = inv
        codes[~present] = uniq.shape[0]
    else:
        values = np.array([None], dtype=object)
    return Codes(column, codes, values)


def with_codes(frame: Frame) -> Frame:
    """The same frame, with codes for its source, predicted class and categorical columns; the columns are
    rebuilt as ``values[codes]`` so that the codes really describe them (as in the detector process)."""
    out = frame.take(slice(None))
    for col_name in ("source_id", "pred_label"):
        if getattr(out, col_name) is None:
            continue
        c = coded(getattr(out, col_name))
        col = c.values[c.codes]
        setattr(out, col_name, col)
        out.codes[id(col)] = Codes(col, c.codes, c.values)
    for name, col in list(out.categorical.items()):
        c = coded(col)
        new = c.values[c.codes]
        out.categorical[name] = new
        out.codes[id(new)] = Codes(new, c.codes, c.values)
    return out


def column(n: int, rng: np.random.Generator, levels: int = 7, missing: float = 0.1) -> np.ndarray:
    vals = np.array([f"v{i}" for i in range(levels)], dtype=object)[rng.integers(0, levels, n)]
    vals[rng.random(n) < missing] = None
    return vals


@pytest.mark.parametrize("missing", [0.0, 0.2, 1.0])
def test_text_groups_are_numpy_unique_of_the_present_values_with_codes_or_without(missing):
    rng = np.random.default_rng(1)
    col = column(500, rng, missing=missing)
    want_known = np.array([v is not None for v in col.tolist()])
    want_names, want_inv = np.unique(col[want_known].astype(str), return_inverse=True)
    for g in (TextGroups.of(col), TextGroups.of(col, coded(col))):
        known, names, inv = g.unique()
        assert known.tolist() == want_known.tolist()
        assert names.tolist() == want_names.tolist() and inv.tolist() == want_inv.tolist()
    # a subset: only the values it holds, numbered among themselves
    rows = rng.random(500) < 0.05
    sub = col[rows]
    sk = np.array([v is not None for v in sub.tolist()], dtype=bool)
    wn, wi = np.unique(sub[sk].astype(str), return_inverse=True)
    for g in (TextGroups.of(col), TextGroups.of(col, coded(col))):
        known, names, inv = g.take(rows).unique()
        assert known.tolist() == sk.tolist() and names.tolist() == wn.tolist() and inv.tolist() == wi.tolist()


def test_codes_are_handed_out_only_for_the_very_column_they_describe():
    rng = np.random.default_rng(2)
    f = with_codes(
        Frame.from_columns(
            event_id=np.arange(50).astype(str), event_time=np.zeros(50), categorical={"c": column(50, rng)}
        )
    )
    col = f.categorical["c"]
    assert f.codes_of(col) is not None
    assert f.codes_of(col.copy()) is None  # an equal array, not the one described
    assert f.take(slice(0, 10)).codes_of(f.take(slice(0, 10)).categorical["c"]) is None  # take drops them
    assert f.codes_of(None) is None


def test_hashes_from_codes_equal_hashes_of_the_column():
    rng = np.random.default_rng(3)
    f = Frame.from_columns(
        event_id=np.arange(400).astype(str),
        event_time=np.zeros(400),
        categorical={"c": column(400, rng), "d": column(400, rng, missing=1.0)},
    )
    g = with_codes(f)
    for name in ("c", "d"):
        want_h, want_p = hash_values(f.categorical[name])
        cols = WindowColumns(g)
        assert cols.hashes(name).tolist() == want_h.tolist()
        assert cols.present(name).tolist() == want_p.tolist()


def test_category_codes_from_codes_equal_the_plain_ones_unseen_values_included():
    from detectors.reference import Reference
    from detectors.spec import FeatureSpec

    rng = np.random.default_rng(6)
    ref = Reference.from_frame(
        Frame.from_columns(
            event_id=np.arange(600).astype(str), event_time=np.zeros(600), categorical={"c": column(600, rng, levels=5)}
        ),
        [FeatureSpec(name="c", kind="categorical")],
    )
    win = Frame.from_columns(
        event_id=np.arange(400).astype(str), event_time=np.zeros(400), categorical={"c": column(400, rng, levels=9)}
    )  # v5..v8: never in the reference
    want = WindowColumns(win).category_codes("c", ref.categorical["c"])
    got = WindowColumns(with_codes(win)).category_codes("c", ref.categorical["c"])
    assert want[1] == got[1] == 4 and want[0].tolist() == got[0].tolist()


def test_codes_of_a_column_follow_first_appearance_and_refuse_what_they_cannot_code():
    c = Codes.of(np.array(["b", None, "a", "b"], dtype=object), max_share=1.0)
    assert c is not None and c.values.tolist() == ["b", None, "a"] and c.codes.tolist() == [0, 1, 2, 0]
    assert Codes.of(np.array([1, True, 1.0, 1], dtype=object), max_share=1.0) is None  # one dict key: not coded
    assert Codes.of(np.array(["x", "y"], dtype=object)) is None  # as many values as rows: not worth it
    assert Codes.of(np.zeros(4)) is None and Codes.of(np.empty(0, dtype=object)) is None


def test_source_contrast_and_the_extraction_tracker_give_the_same_with_shared_groups():
    rng = np.random.default_rng(4)
    n = 3000
    src = column(n, rng, levels=12, missing=0.05)
    exceed = rng.random(n) < 0.05
    exceed[src == "v3"] = rng.random(int((src == "v3").sum())) < 0.6  # one source stands out
    a = source_contrast("x", src, exceed, min_events=5)
    b = source_contrast("x", src, exceed, min_events=5, groups=TextGroups.of(src, coded(src)))
    assert a == b and a.source == "v3" and a.n_tested == 12
    with pytest.raises(ValueError, match="source groups"):
        source_contrast("x", src, exceed, groups=TextGroups.of(src[:10]))
    Z = rng.normal(size=(n, 4))
    t = rng.random(n).cumsum()
    t1, t2 = ExtractionTracker(4, min_queries=20, test_every=10), ExtractionTracker(4, min_queries=20, test_every=10)
    for lo in range(0, n, 1000):
        s = slice(lo, lo + 1000)
        u1 = t1.update(src[s], Z[s], t[s])
        u2 = t2.update(src[s], Z[s], t[s], groups=TextGroups.of(src[s], coded(src[s])))
        assert u1.source.tolist() == u2.source.tolist()
        for f in ("n_batch", "n_queries", "tested", "flagged", "first_flag"):
            assert getattr(u1, f).tolist() == getattr(u2, f).tolist(), f
        np.testing.assert_array_equal(u1.w, u2.w)


def test_prediction_frame_from_codes_equals_the_plain_one():
    rng = np.random.default_rng(5)
    f = Frame.from_columns(
        event_id=np.arange(300).astype(str), event_time=np.zeros(300), pred_label=column(300, rng, levels=3)
    )
    a, _ = prediction_frame(f)
    b, _ = prediction_frame(with_codes(f))
    (name,) = a.categorical
    assert a.categorical[name].tolist() == b.categorical[name].tolist()
    assert b.codes_of(b.categorical[name]) is not None  # and the codes follow into the prediction frame


def test_take_and_concat_keep_the_codes_of_categorical_columns():
    """The codes follow the rows through ``take`` and ``concat`` (values made distinct across the parts);
    a part without codes leaves the joined column without them: codes are a cache, never a guess."""
    from detectors.frame import Codes, Frame, concat

    def part(values: list, codes: list, coded: bool = True) -> Frame:
        vals = np.array(values, dtype=object)
        col = vals[np.array(codes)]
        f = Frame.from_columns(
            event_id=np.arange(len(codes)).astype(str).astype(object),
            event_time=np.zeros(len(codes)),
            categorical={"c": col},
        )
        if coded:
            f.codes[id(col)] = Codes.distinct(col, np.array(codes), vals)
        return f

    a, b = part(["x", None, "y"], [0, 0, 1, 2]), part(["y", "z", None], [2, 1, 0])
    joined = concat([a, b])
    c = joined.codes_of(joined.categorical["c"])
    assert c is not None and sorted(map(str, c.values.tolist())) == ["None", "x", "y", "z"]
    assert c.values[c.codes].tolist() == joined.categorical["c"].tolist() == ["x", "x", None, "y", None, "z", "y"]
    t = joined.take(np.array([6, 0, 2]))
    tc = t.codes_of(t.categorical["c"])
    assert tc is not None and tc.values[tc.codes].tolist() == ["y", "x", None]
    s = joined.take(slice(1, 4))
    assert s.codes_of(s.categorical["c"]).values[s.codes_of(s.categorical["c"]).codes].tolist() == ["x", None, "y"]
    plain = concat([a, part(["q"], [0, 0], coded=False)])
    assert plain.codes_of(plain.categorical["c"]) is None
