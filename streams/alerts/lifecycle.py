"""Alert lifecycle: pending → firing → resolved, one notification per firing, silences.

Pure state machine (no I/O): :func:`advance` takes an alert's previous
:class:`AlertState` and this window's :class:`~streams.alerts.rules.Observation` and
returns the new state plus, when something must be said, an :class:`AlertEvent`.

- A breaching window makes an inactive alert *pending*; it is *firing* once
  ``for_windows`` consecutive windows breached and the run spans ``for`` seconds
  (end of the first to end of the current breaching window; ``for_windows: 1`` and
  ``for: 0`` fire at once).
- A pending alert whose condition clears goes back to *inactive*, silently.
- A firing alert whose condition clears is *resolved* once no window breached for
  ``keep_firing_for`` seconds (since the end of the last breaching window; 0: at the first
  clear window); until then it keeps firing, and a breach meanwhile continues the same
  episode — nothing is announced. The resolve is announced to webhooks only if the
  firing was (so a receiver never gets a lone "resolved").
- While firing, one notification; another only after ``repeat_interval`` (wall clock),
  counted by ``repeat`` and given its own idempotency key.
- A silenced alert still changes state (the alerts topic records it, flagged
  ``silenced``) but webhooks are not called; if the silence ends while it still fires,
  the next window notifies.
- A window without the signal gives no observation, so it changes nothing.

>>> from streams.alerts.rules import AlertRule, Observation
>>> rule = AlertRule(name="r", signal="drift.p_value", op="<", threshold=0.01, for_windows=2)
>>> def obs(p, t): return Observation("k", rule, "m", "1", {}, p, p < 0.01, t)
>>> s1 = advance(None, obs(0.001, 1), now_ns=1)
>>> s1.state.status, s1.event
('pending', None)
>>> s2 = advance(s1.state, obs(0.002, 2), now_ns=2)
>>> s2.state.status, s2.event.status
('firing', 'firing')
>>> s3 = advance(s2.state, obs(0.5, 3), now_ns=3)
>>> s3.state.status, s3.event.status, s3.event.notify
('resolved', 'resolved', True)
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

from detectors.records import FieldValue
from streams.alerts.rules import Observation, render_summary, seconds_text

Status = Literal["inactive", "pending", "firing", "resolved"]
STATUSES: tuple[str, ...] = ("inactive", "pending", "firing", "resolved")


@dataclass(frozen=True, slots=True)
class AlertState:
    """What is remembered about one alert key between windows (persisted by the store)."""

    key: str
    model: str
    version: str
    rule: str
    severity: str
    labels: dict[str, str]
    status: Status = "inactive"
    consecutive: int = 0  # breaching windows in a row
    pending_since_ns: int = 0  # window end of the first breach of the current run
    firing_since_ns: int = 0  # window end at which it fired (0: never in this episode)
    resolved_ns: int = 0  # window end at which it resolved
    last_breach_ns: int = 0  # window end of the latest breaching window (keep_firing_for counts from it)
    last_window_ns: int = 0
    value: FieldValue = 0.0
    summary: str = ""
    notified: bool = False  # the firing of this episode reached the webhooks
    last_notified_ns: int = 0  # wall clock of the last webhook notification
    repeat: int = 0  # notifications of this episode so far minus one
    silenced: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AlertState:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """A firing or resolved announcement: the alerts topic's record and every webhook's source.

    ``id`` is the idempotency key: the same firing (or resolve, or n-th repeat) of the
    same alert always gets the same id, so a replayed window cannot notify twice.
    ``notify`` says whether webhooks get it (False: silenced, or a resolve of a firing
    nobody was told about); the alerts topic gets every transition regardless.
    """

    id: str
    status: Literal["firing", "resolved"]
    key: str
    fingerprint: str
    rule: str
    model: str
    version: str
    severity: str
    labels: dict[str, str]
    summary: str
    description: str
    signal: str
    op: str
    threshold: float | bool | str
    value: FieldValue
    for_windows: int
    consecutive: int
    starts_at_ns: int
    ends_at_ns: int  # 0 while firing
    window_end_ns: int
    repeat: int = 0
    notify: bool = True
    silenced: bool = False
    webhooks: tuple[str, ...] | None = None  # routing: None = every endpoint
    dashboard_url: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["webhooks"] = list(self.webhooks) if self.webhooks is not None else None
        return d


def fingerprint(key: str) -> str:
    """Stable 16-hex id of an alert key (Alertmanager's ``fingerprint``)."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def event_id(key: str, firing_since_ns: int, status: str, repeat: int) -> str:
    """The idempotency key of one announcement.

    >>> event_id("k", 1, "firing", 0) == event_id("k", 1, "firing", 0) != event_id("k", 1, "resolved", 0)
    True
    """
    return hashlib.sha256(f"{key}|{firing_since_ns}|{status}|{repeat}".encode()).hexdigest()[:32]


def iso(ns: int) -> str:
    """RFC 3339 UTC with milliseconds.

    >>> iso(1_700_000_000_123_000_000)
    '2023-11-14T22:13:20.123Z'
    """
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _texts(obs: Observation, state: AlertState, status: str) -> tuple[str, str]:
    rule = obs.rule
    series = ", ".join(f"{k}={v}" for k, v in sorted(obs.series.items()))
    values: dict[str, Any] = {
        **obs.series,
        **rule.labels,
        "model": obs.model,
        "version": obs.version,
        "rule": rule.name,
        "severity": rule.severity,
        "value": obs.value,
        "threshold": rule.threshold,
        "op": rule.op,
        "signal": rule.signal,
        "for_windows": rule.for_windows,
        "windows": state.consecutive,
        "for": rule.for_,
        "keep_firing_for": rule.keep_firing_for,
    }
    where = f" [{series}]" if series else ""
    if rule.summary:
        summary = render_summary(rule.summary, values)
        if status == "resolved":  # the template describes the breach; say it is over
            summary = f"[resolved] {summary}"
    elif status == "firing":
        summary = f"{rule.name}: {rule.signal} {_fmt(obs.value)} {rule.op} {_fmt(rule.threshold)} on {obs.model} v{obs.version}{where}"
    else:
        summary = (
            f"{rule.name} resolved: {rule.signal} {_fmt(obs.value)}, no longer {rule.op} {_fmt(rule.threshold)},"
            f" on {obs.model} v{obs.version}{where}"
        )
    if status == "firing":
        description = (
            f"{rule.signal} = {_fmt(obs.value)} {rule.op} {_fmt(rule.threshold)} for "
            f"{state.consecutive} consecutive window(s) (rule needs {rule.for_windows}"
            + (f" over at least {seconds_text(rule.for_)}" if rule.for_ else "")
            + ") on model "
            f"{obs.model} version {obs.version}{where}; window ending {iso(obs.window_end_ns)}."
        )
    else:
        description = (
            f"{rule.signal} = {_fmt(obs.value)}, no longer {rule.op} {_fmt(rule.threshold)}, on model "
            f"{obs.model} version {obs.version}{where}; firing since {iso(state.firing_since_ns)}, "
            + (
                f"last breached in the window ending {iso(state.last_breach_ns)} (rule keeps firing for "
                f"{seconds_text(rule.keep_firing_for)}), "
                if rule.keep_firing_for
                else ""
            )
            + f"resolved at the window ending {iso(obs.window_end_ns)}."
        )
    return summary, description


def _event(
    obs: Observation, state: AlertState, status: Literal["firing", "resolved"], notify: bool, silenced: bool
) -> AlertEvent:
    summary, description = _texts(obs, state, status)
    return AlertEvent(
        id=event_id(obs.key, state.firing_since_ns, status, state.repeat if status == "firing" else 0),
        status=status,
        key=obs.key,
        fingerprint=fingerprint(obs.key),
        rule=obs.rule.name,
        model=obs.model,
        version=obs.version,
        severity=obs.rule.severity,
        labels=obs.labels,
        summary=summary,
        description=description,
        signal=obs.rule.signal,
        op=obs.rule.op,
        threshold=obs.rule.threshold,
        value=obs.value,
        for_windows=obs.rule.for_windows,
        consecutive=state.consecutive,
        starts_at_ns=state.firing_since_ns,
        ends_at_ns=obs.window_end_ns if status == "resolved" else 0,
        window_end_ns=obs.window_end_ns,
        repeat=state.repeat if status == "firing" else 0,
        notify=notify,
        silenced=silenced,
        webhooks=tuple(obs.rule.webhooks) if obs.rule.webhooks is not None else None,
    )


@dataclass(frozen=True, slots=True)
class Step:
    """The outcome of one observation: the new state and, maybe, an announcement."""

    state: AlertState
    event: AlertEvent | None
    changed: bool  # the status changed


def advance(prev: AlertState | None, obs: Observation, *, now_ns: int, silenced: bool = False) -> Step:
    """Apply one window's observation to an alert (see the module docstring for the rules)."""
    rule = obs.rule
    if prev is None:
        prev = AlertState(
            key=obs.key, model=obs.model, version=obs.version, rule=rule.name, severity=rule.severity, labels=obs.labels
        )
    base = replace(
        prev,
        last_window_ns=obs.window_end_ns,
        value=obs.value,
        severity=rule.severity,
        labels=obs.labels,
        silenced=silenced,
    )

    if not obs.breached:
        if prev.status == "pending":
            return Step(replace(base, status="inactive", consecutive=0), None, True)
        if prev.status == "firing" and _keeps_firing(prev, obs):
            return Step(replace(base, consecutive=0), None, False)
        if prev.status == "firing":
            state = replace(base, status="resolved", consecutive=0, resolved_ns=obs.window_end_ns)
            # announce to webhooks only what they were told was firing; rule webhooks may opt out
            ev = _event(obs, state, "resolved", notify=prev.notified, silenced=silenced)
            return Step(replace(state, summary=ev.summary), ev, True)
        return Step(replace(base, consecutive=0), None, False)

    consecutive = prev.consecutive + 1 if prev.status in ("pending", "firing") else 1
    base = replace(base, last_breach_ns=obs.window_end_ns)
    if prev.status == "firing":
        state = replace(base, consecutive=consecutive)
        if not state.notified:
            if silenced:
                return Step(state, None, False)
            state = replace(state, notified=True, last_notified_ns=now_ns)
            ev = _event(obs, state, "firing", notify=True, silenced=False)
            return Step(replace(state, summary=ev.summary), ev, False)
        interval = rule.repeat_interval
        if not silenced and interval and now_ns - prev.last_notified_ns >= interval * 1e9:
            state = replace(state, repeat=prev.repeat + 1, last_notified_ns=now_ns)
            ev = _event(obs, state, "firing", notify=True, silenced=False)
            return Step(replace(state, summary=ev.summary), ev, False)
        return Step(state, None, False)

    pending_since = prev.pending_since_ns if prev.status == "pending" else obs.window_end_ns
    state = replace(base, consecutive=consecutive, pending_since_ns=pending_since)
    if consecutive < rule.for_windows or obs.window_end_ns - pending_since < rule.for_ * 1e9:
        changed = prev.status != "pending"
        if changed:  # a new episode: nothing of it has been told yet
            state = replace(state, notified=False, repeat=0)
        return Step(replace(state, status="pending", firing_since_ns=0, resolved_ns=0), None, changed)
    state = replace(
        state,
        status="firing",
        firing_since_ns=obs.window_end_ns,
        resolved_ns=0,
        repeat=0,
        notified=not silenced,
        last_notified_ns=0 if silenced else now_ns,
    )
    ev = _event(obs, state, "firing", notify=not silenced, silenced=silenced)
    return Step(replace(state, summary=ev.summary), ev, True)


def _keeps_firing(prev: AlertState, obs: Observation) -> bool:
    """Whether a firing alert whose condition is false now is still within ``keep_firing_for``.

    >>> from streams.alerts.rules import AlertRule, Observation
    >>> rule = AlertRule(name="r", signal="drift.drift", op="==", threshold=1, keep_firing_for="1m")
    >>> st = AlertState("k", "m", "1", "r", "warning", {}, status="firing", last_breach_ns=100 * 10**9)
    >>> [_keeps_firing(st, Observation("k", rule, "m", "1", {}, 0, False, t * 10**9)) for t in (130, 160)]
    [True, False]
    """
    keep = obs.rule.keep_firing_for
    return bool(keep) and obs.window_end_ns - prev.last_breach_ns < keep * 1e9
