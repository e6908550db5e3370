"""A watchdog for partitions that are assigned, have a backlog, and are not fetched.

Why: Faust's own check for this ("Aiokafka has not sent fetch request for TP ... (last request Ns ago)")
can never fire. It compares ``time.monotonic()`` (seconds since boot) with aiokafka's per-partition
``timestamp`` of the last fetch, which is wall-clock epoch milliseconds (``int(1000 * time.time())`` in
``aiokafka/consumer/fetcher.py``): "now minus the last fetch" is always about minus 1.8 billion seconds,
never above the timeout (faust/transport/drivers/aiokafka.py, ``_verify_aiokafka_event_path``). Only its
"since start" variant (never fetched at all) works. A partition assigned, fetched once, then never again
is lost monitoring that nothing reports.

:class:`FetchWatch` is the decision, pure: given what the consumer knows of each assigned partition
(:class:`PartitionView`), a partition is *stalled* when it has a backlog (its end offset as of the last
fetch is beyond its position), it is not held back on purpose (paused by flow control or a full stream
buffer, or holding fetched records not handed over yet), and it has had no fetch answer for
``stall_seconds``. Each stall is reported once per episode; the episode ends when the partition is
fetched again, its backlog is gone or it is no longer assigned. A partition never fetched since its
assignment has no known end offset and is left to Faust's "since start" check, which works
(streams/worker/app.py restarts its clock at every assignment).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PartitionView:
    """What the consumer knows of one assigned partition, read at one moment."""

    topic: str
    partition: int
    position: int | None  #: the next offset the consumer will read (None: not known yet)
    end: int | None  #: the end offset the last fetch answer reported (None: never fetched since assignment)
    last_fetch: float | None  #: wall-clock seconds of the last fetch answer for it (None: never)
    held: bool = False  #: paused on purpose (flow control, a full stream buffer) or holding records not handed over

    @property
    def key(self) -> tuple[str, int]:
        return self.topic, self.partition

    @property
    def backlog(self) -> int:
        """Messages between the position and the end (0 when either is unknown)."""
        if self.position is None or self.end is None:
            return 0
        return max(0, self.end - self.position)


@dataclass(frozen=True)
class Stall:
    """A partition found stalled: its view, and the seconds since its last fetch answer."""

    view: PartitionView
    seconds: float


class FetchWatch:
    """Reports assigned partitions with a backlog that saw no fetch for ``stall_seconds`` (module docstring).

    >>> w = FetchWatch(30.0)
    >>> v = PartitionView("t", 0, position=10, end=50, last_fetch=1000.0)
    >>> w.check(1020.0, [v])
    ([], [])
    >>> stalls, _ = w.check(1031.0, [v]); [(s.view.key, s.seconds) for s in stalls]
    [(('t', 0), 31.0)]
    >>> w.check(1090.0, [v])  # the same episode: reported once
    ([], [])
    >>> w.check(1091.0, [PartitionView("t", 0, position=50, end=60, last_fetch=1090.5)])  # fetched again
    ([], [('t', 0)])
    """

    def __init__(self, stall_seconds: float) -> None:
        if stall_seconds <= 0:
            raise ValueError(f"stall_seconds must be > 0, got {stall_seconds}")
        self.stall_seconds = float(stall_seconds)
        self._episodes: dict[tuple[str, int], float] = {}  # stalled partition -> its last fetch when flagged

    def stalled(self, now: float, v: PartitionView) -> bool:
        """The decision for one partition (no memory of episodes)."""
        if v.held or v.backlog == 0 or v.last_fetch is None:
            return False
        return now - v.last_fetch >= self.stall_seconds

    def check(self, now: float, views: list[PartitionView]) -> tuple[list[Stall], list[tuple[str, int]]]:
        """One look at every assigned partition (``now``: wall-clock seconds, as ``last_fetch``).

        Returns the partitions newly stalled (their episode starts: report them) and those whose episode
        ended since the last look (fetched again, backlog gone, or no longer in ``views``).
        """
        stalls: list[Stall] = []
        ended: list[tuple[str, int]] = []
        current = {v.key: v for v in views}
        for key, flagged_at in list(self._episodes.items()):
            v = current.get(key)
            if v is None or v.backlog == 0 or v.last_fetch != flagged_at:
                del self._episodes[key]
                ended.append(key)
        for v in views:
            if v.key not in self._episodes and self.stalled(now, v):
                assert v.last_fetch is not None  # stalled() checked it
                self._episodes[v.key] = v.last_fetch
                stalls.append(Stall(v, now - v.last_fetch))
        return stalls, ended

    @property
    def stalled_now(self) -> list[tuple[str, int]]:
        """The partitions in a stall episode."""
        return sorted(self._episodes)
