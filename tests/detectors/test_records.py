"""A Record survives pickling whole (the detector process sends ~80 of them back per window)."""

from __future__ import annotations

import copy
import dataclasses
import pickle

import pytest

from detectors.records import DRIFT, Record


def test_a_record_pickles_and_copies_whole_and_stays_frozen():
    r = Record(DRIFT, {"model": "m", "feature": "x"}, {"p_value": 0.5, "drift": 1, "engine": "native"}, 17, {"k": [1]})
    for got in (pickle.loads(pickle.dumps(r, protocol=5)), copy.copy(r), copy.deepcopy(r)):
        assert got == r and got.extra == {"k": [1]} and got.time_ns == 17 and type(got) is Record
    with pytest.raises(dataclasses.FrozenInstanceError):
        pickle.loads(pickle.dumps(r)).time_ns = 3  # type: ignore[misc]
