"""Which windows write the points that describe their reference (streams.worker.pipeline._reference_points).

The reference's histograms and the feature impacts are the same for every window judged against
one reference; they are written by the window that starts using a reference and by every
REFERENCE_POINTS_EVERY-th window — decided from the stream's windows, so a worker that resumes
from a checkpoint writes the same points as one that ran through.
"""

from __future__ import annotations

from types import SimpleNamespace

from streams.worker.pipeline import REFERENCE_POINTS_EVERY, _reference_points
from streams.worker.windows import Checkpoint

REF = object()


def _state(windows_closed=0, last_reference=None, resumed_from=None, ref_end_pos=(0, 4)):
    return SimpleNamespace(
        windows_closed=windows_closed, last_reference=last_reference, resumed_from=resumed_from, ref_end_pos=ref_end_pos
    )


def _ck(seq: int, start_pos) -> Checkpoint:
    return Checkpoint(seq=seq, start_pos=start_pos, end_pos=(start_pos[0] + 4, 0), time_ns=seq)


def _w(seq: int):
    return SimpleNamespace(seq=seq)


def test_written_by_the_first_window_of_a_reference_and_every_hundredth():
    # first_n: window 0 built the reference (not judged), window 1 is the first one judged against it
    assert _reference_points(_state(1, None), _w(1), REF, "first_n") is True
    assert _reference_points(_state(2, REF), _w(2), REF, "first_n") is False
    assert _reference_points(_state(99, REF), _w(REFERENCE_POINTS_EVERY), REF, "first_n") is True
    # window.reference_points_every: 1 writes them with every window
    assert _reference_points(_state(2, REF), _w(2), REF, "first_n", every=1) is True
    # a new reference object (set, reset, rebuilt) while the stream runs here
    assert _reference_points(_state(5, REF), _w(5), object(), "set") is True
    # the very first window of a stream with a file reference
    assert _reference_points(_state(), _w(0), REF, "file") is True
    # a rolling reference is new with every window; no reference, no points
    assert _reference_points(_state(3, REF), _w(3), REF, "rolling") is True
    assert _reference_points(_state(3, None), _w(3), None, "none") is False


def test_a_resumed_stream_decides_as_the_one_that_ran_through():
    # resumed after window 0 (the first_n reference's own rows, ending at (0, 4)): window 1 is the first judged
    assert _reference_points(_state(resumed_from=_ck(0, (0, 0))), _w(1), REF, "first_n") is True
    # resumed after window 6, which started after the reference: already judged against it, no repeat
    assert _reference_points(_state(resumed_from=_ck(6, (30, 0))), _w(7), REF, "first_n") is False
    assert _reference_points(_state(resumed_from=_ck(6, (30, 0))), _w(7), REF, "file") is False
    # a reference from another partition (end position unknown here): the previous window was judged
    assert _reference_points(_state(resumed_from=_ck(6, (30, 0)), ref_end_pos=(-1, -1)), _w(7), REF, "first_n") is False
