"""The SQLite alert store: state, silences and outbox survive reopening."""

from __future__ import annotations

import time

import pytest

from streams.alerts.lifecycle import AlertState
from streams.alerts.store import AlertStore, Silence, default_path


def row(target="ops", event_id="e1", **kw):
    return {
        "target": target,
        "event_id": event_id,
        "event_status": "firing",
        "alert_key": "m/1/r",
        "model": "m",
        "version": "1",
        "rule": "r",
        "severity": "warning",
        "body": b"{}",
        **kw,
    }


def test_state_outbox_and_mark_survive_reopen(tmp_path):
    path = default_path(tmp_path)
    st = AlertState(
        key="m/1/r",
        model="m",
        version="1",
        rule="r",
        severity="warning",
        labels={"a": "b"},
        status="firing",
        consecutive=3,
        value=0.001,
        notified=True,
    )
    with AlertStore(path) as s:
        ids = s.commit_window("m", "1", 100, [st], [row(), row(target="kafka")])
        assert len(ids) == 2
        # the same announcement queued again (e.g. a replay) is ignored
        assert s.commit_window("m", "1", 101, [st], [row()]) == []
    with AlertStore(path) as s:
        assert s.states("m", "1") == {"m/1/r": st}
        assert s.last_window("m", "1") == 101 and s.last_window("m", "2") == 0
        assert s.pending_count() == 2 and s.head("ops").event_id == "e1"
        s.commit_window("m", "1", 102, [AlertState(**{**st.to_dict(), "status": "inactive"})], [])
        assert s.states() == {}


def test_outbox_head_is_fifo_per_target(tmp_path):
    with AlertStore(tmp_path / "a.db") as s:
        s.commit_window("m", "1", 1, [], [row(event_id="a"), row(event_id="b"), row(target="x", event_id="c")])
        head = s.head("ops")
        assert head.event_id == "a"
        s.record_attempt(
            head.id, status="pending", attempts=1, next_attempt_ns=5, last_error="HTTP 500", http_status=500
        )
        assert s.head("ops").event_id == "a" and s.head("ops").attempts == 1
        s.record_attempt(head.id, status="delivered", attempts=2, http_status=200)
        assert s.head("ops").event_id == "b" and s.head("x").event_id == "c"
        log = s.deliveries(target="ops")
        assert [r.event_id for r in log] == ["b", "a"] and log[1].delivered_ns > 0


def test_silences(tmp_path):
    with AlertStore(tmp_path / "a.db") as s:
        now = time.time_ns()
        a = s.add_silence({"model": "m", "feature": "petal_*"}, now + 3_600 * 10**9, comment="retrain")
        s.add_silence({"model": "x"}, now + 1, starts_ns=now - 10)
        time.sleep(0.01)
        assert [x.id for x in s.silences()] == [a.id]
        assert len(s.silences(include_expired=True)) == 2
        assert s.silences()[0].matches({"model": "m", "feature": "petal_w", "rule": "r"})
        assert not s.silences()[0].matches({"model": "m"})
        assert s.remove_silence(a.id[:6]) and not s.remove_silence(a.id)
        with pytest.raises(ValueError):
            s.add_silence({}, now + 10)


def test_silence_window():
    s = Silence("s", {"model": "m"}, 10, 20)
    assert [s.active(t) for t in (9, 10, 19, 20)] == [False, True, True, False]


def test_prune(tmp_path):
    with AlertStore(tmp_path / "a.db") as s:
        (i,) = s.commit_window("m", "1", 1, [], [row()])
        s.record_attempt(i, status="delivered", attempts=1)
        assert s.prune(time.time_ns() + 1) == 1 and s.deliveries() == []
