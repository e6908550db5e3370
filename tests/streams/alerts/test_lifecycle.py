"""Lifecycle: pending → firing → resolved, one notification per firing, repeats, silences."""

from __future__ import annotations

from streams.alerts.lifecycle import AlertState, advance
from streams.alerts.rules import AlertRule, Observation

S = 1_000_000_000  # one second in ns


def make_rule(**kw) -> AlertRule:
    return AlertRule(**{"name": "r", "signal": "drift.p_value", "op": "<", "threshold": 0.01, **kw})


def run(rule: AlertRule, values, *, silenced=None, now_step=S, state=None):
    """Feed p-values window by window; returns (states, events) lists."""
    states, events = [], []
    for i, v in enumerate(values):
        obs = Observation("k", rule, "m", "1", {"feature": "age"}, v, v < 0.01, (i + 1) * 60 * S)
        step = advance(state, obs, now_ns=(i + 1) * now_step, silenced=bool(silenced and silenced[i]))
        state = step.state
        states.append(state.status)
        events.append(step.event)
    return states, events


def kinds(events):
    return [(e.status, e.repeat, e.notify) if e else None for e in events]


def test_for_n_consecutive_windows():
    states, events = run(make_rule(for_windows=3), [0.001, 0.002, 0.5, 0.001, 0.001, 0.001, 0.001])
    assert states == ["pending", "pending", "inactive", "pending", "pending", "firing", "firing"]
    assert kinds(events) == [None] * 5 + [("firing", 0, True), None]


def test_one_notification_per_firing_and_one_resolve():
    states, events = run(make_rule(repeat_interval=None), [0.001] * 5 + [0.5] * 3)
    assert states == ["firing"] * 5 + ["resolved"] * 3
    assert kinds(events) == [("firing", 0, True)] + [None] * 4 + [("resolved", 0, True)] + [None] * 2
    fire, resolve = events[0], events[5]
    assert fire.starts_at_ns == 60 * S and fire.ends_at_ns == 0
    assert resolve.starts_at_ns == 60 * S and resolve.ends_at_ns == 6 * 60 * S
    assert fire.id != resolve.id and fire.fingerprint == resolve.fingerprint


def test_new_episode_gets_new_ids_and_same_inputs_give_same_ids():
    _, a = run(make_rule(), [0.001, 0.5, 0.001, 0.5])
    _, b = run(make_rule(), [0.001, 0.5, 0.001, 0.5])
    ids = [e.id for e in a]
    assert len(set(ids)) == 4 and ids == [e.id for e in b]


def test_repeat_only_after_the_interval():
    # windows every 10 s of wall clock, repeat every 25 s: notify at t=10, 40, 70
    _states, events = run(make_rule(repeat_interval=25), [0.001] * 8, now_step=10 * S)
    assert kinds(events) == [
        ("firing", 0, True),
        None,
        None,
        ("firing", 1, True),
        None,
        None,
        ("firing", 2, True),
        None,
    ]
    assert len({e.id for e in events if e}) == 3


def test_silenced_firing_is_recorded_not_notified_then_notified_when_silence_ends():
    sil = [True, True, False, False, False]
    states, events = run(make_rule(repeat_interval=None), [0.001, 0.001, 0.001, 0.001, 0.5], silenced=sil)
    assert states == ["firing"] * 4 + ["resolved"]
    assert kinds(events) == [("firing", 0, False), None, ("firing", 0, True), None, ("resolved", 0, True)]
    assert events[0].silenced and events[0].id == events[2].id  # same firing, same idempotency key


def test_resolve_of_a_firing_nobody_heard_of_is_not_notified():
    _, events = run(make_rule(), [0.001, 0.5], silenced=[True, False])
    assert kinds(events) == [("firing", 0, False), ("resolved", 0, False)]


def test_silence_does_not_swallow_the_resolve_of_a_notified_firing():
    _, events = run(make_rule(), [0.001, 0.001, 0.5], silenced=[False, True, True])
    assert kinds(events) == [("firing", 0, True), None, ("resolved", 0, True)]


def test_texts_say_what_and_where():
    _, events = run(
        make_rule(summary="{feature} drifted on {model} v{version}: p={value:.2g}", for_windows=2), [0.001, 0.002]
    )
    ev = events[1]
    assert ev.summary == "age drifted on m v1: p=0.002"
    assert "drift.p_value = 0.002 < 0.01 for 2 consecutive window(s)" in ev.description
    assert "feature=age" in ev.description and ev.labels["feature"] == "age"


def test_a_resolve_does_not_repeat_the_breach_as_if_it_held():
    _, events = run(make_rule(), [0.001, 0.5])
    resolved = events[1]
    assert resolved.status == "resolved"
    assert "resolved" in resolved.summary and "no longer < 0.01" in resolved.summary
    assert "0.5 < 0.01" not in resolved.summary
    _, events = run(make_rule(summary="{feature} drifted: p={value:.2g}"), [0.001, 0.5])
    assert events[0].summary == "age drifted: p=0.001"
    assert events[1].summary == "[resolved] age drifted: p=0.5"


def test_state_round_trips_through_a_dict():
    rule = make_rule()
    obs = Observation("k", rule, "m", "1", {}, 0.001, True, 5)
    st = advance(None, obs, now_ns=1).state
    assert AlertState.from_dict(st.to_dict()) == st


def test_a_new_episode_starts_untold():
    rule = make_rule(for_windows=2)
    st = None
    for i, p in enumerate([0.001, 0.001, 0.5, 0.001], start=1):
        st = advance(st, Observation("k", rule, "m", "1", {}, p, p < 0.01, i * S), now_ns=i * S).state
    assert (st.status, st.notified, st.repeat) == ("pending", False, 0)


def run_flags(rule: AlertRule, flags, step_s: int = 60):
    """Feed 0/1 verdicts (an online detector's ``drift``) window by window, ``step_s`` apart."""
    state, states, events = None, [], []
    for i, f in enumerate(flags):
        obs = Observation("k", rule, "m", "1", {}, f, f == 1, (i + 1) * step_s * S)
        step = advance(state, obs, now_ns=(i + 1) * step_s * S)
        state = step.state
        states.append(state.status)
        events.append(step.event)
    return states, events


FLAPPING = [1, 0, 1, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0]  # windows a minute apart


def test_without_keep_firing_for_a_flapping_condition_fires_and_resolves_every_flicker():
    _, events = run_flags(make_rule(signal="drift.drift", op="==", threshold=1), FLAPPING)
    assert [e.status for e in events if e] == ["firing", "resolved"] * 4


def test_keep_firing_for_gives_one_firing_and_one_resolve_for_a_flapping_condition():
    rule = make_rule(signal="drift.drift", op="==", threshold=1, keep_firing_for="3m")
    states, events = run_flags(rule, FLAPPING)
    # the last breach is window 8 (8 min): firing through 8 + 3 min, resolved at the window ending 11 min
    assert states == ["firing"] * 10 + ["resolved"] * 4
    fire, resolve = [e for e in events if e]
    assert (fire.status, resolve.status) == ("firing", "resolved")
    assert fire.starts_at_ns == resolve.starts_at_ns == 60 * S and resolve.ends_at_ns == 11 * 60 * S
    assert "last breached in the window ending" in resolve.description and "keeps firing for 3m" in resolve.description


def test_a_breach_within_keep_firing_for_continues_the_episode_without_a_new_notification():
    rule = make_rule(signal="drift.drift", op="==", threshold=1, keep_firing_for=150, repeat_interval=None)
    states, events = run_flags(rule, [1, 0, 0, 1, 0, 0, 0])
    assert states == ["firing"] * 6 + ["resolved"]
    assert kinds(events) == [("firing", 0, True)] + [None] * 5 + [("resolved", 0, True)]


def test_for_holds_the_alert_pending_until_the_run_spans_the_duration():
    rule = make_rule(signal="drift.drift", op="==", threshold=1, **{"for": "2m"})
    states, events = run_flags(rule, [1, 1, 0, 1, 1, 1, 1])
    # a run must last from its first breaching window's end to at least 2 min later
    assert states == ["pending", "pending", "inactive", "pending", "pending", "firing", "firing"]
    assert kinds(events) == [None] * 5 + [("firing", 0, True), None]
    assert "over at least 2m" in events[5].description


def test_for_and_for_windows_must_both_hold():
    rule = make_rule(signal="drift.drift", op="==", threshold=1, for_windows=3, **{"for": "30s"})
    states, _ = run_flags(rule, [1, 1, 1], step_s=60)
    assert states == ["pending", "pending", "firing"]  # 2 min spanned after 2 windows, but 3 windows needed
    states, _ = run_flags(
        make_rule(signal="drift.drift", op="==", threshold=1, for_windows=2, **{"for": 50}), [1, 1, 1, 1], step_s=20
    )
    assert states == ["pending", "pending", "pending", "firing"]  # 2 windows after 20 s, 50 s after 3 steps (60 s)
