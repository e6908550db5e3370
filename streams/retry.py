"""The one retry/backoff helper: capped exponential delays with optional jitter.

Every loop that waits before trying again (the InfluxDB sink, the producer SDK, dead
letters, the reference store, checkpoints, webhooks, the local stack's start-up
poll) takes its delays from a :class:`Backoff`, so they all grow, cap and jitter
the same way and are tested once here.

Three ways to use it, by what the loop needs:

* :meth:`Backoff.delays` — a plain iterator of delays; the caller sleeps (on an
  event it can be woken from, say) and starts a new iterator after a success::

      delays = RETRY.delays()
      while not done():
          if not try_once():
              stop.wait(next(delays))

* :meth:`Backoff.attempts` / :meth:`Backoff.attempts_async` — one
  :class:`Attempt` per try; the iterator sleeps ``attempt.wait`` before the next
  try, and the last try of a bounded backoff has ``wait=None`` (re-raise then)::

      async for attempt in Backoff(0.5, retries=5).attempts_async():
          try:
              return await send()
          except ConnectionError as e:
              if attempt.wait is None:
                  raise
              log.warning("send failed (%s); retrying in %.1f s", e, attempt.wait)

No I/O clients here: the SDK uses it without pulling anything in.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

__all__ = ["Attempt", "Backoff"]


class Attempt(NamedTuple):
    """One try of a retried operation: ``number`` from 1; ``wait``: the seconds slept before the next
    try if this one fails, or None when it is the last (then the caller gives up or re-raises)."""

    number: int
    wait: float | None


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delays ``initial · factor^(n-1)``, capped at ``cap``, for the retries n = 1, 2, ...

    ``jitter`` (0 … 1) draws each delay from ``[d·(1 - jitter), d]`` so workers that
    failed together do not retry together; 0 (the default) keeps delays exact.
    ``retries``: how many retries (None: without end).

    >>> list(Backoff(0.5, cap=3.0, retries=5).delays())
    [0.5, 1.0, 2.0, 3.0, 3.0]
    >>> b = Backoff(1.0, cap=8.0, jitter=0.5)
    >>> [b.delay(n, rng=lambda: 1.0) for n in (1, 2, 3, 4, 5)]
    [1.0, 2.0, 4.0, 8.0, 8.0]
    >>> b.delay(3, rng=lambda: 0.0)
    2.0
    >>> list(Backoff(0.25, cap=0.1, retries=2).delays())
    [0.1, 0.1]
    >>> [(a.number, a.wait) for a in Backoff(0.0, retries=2).attempts()]
    [(1, 0.0), (2, 0.0), (3, None)]
    """

    initial: float = 0.5
    cap: float = 30.0
    factor: float = 2.0
    jitter: float = 0.0
    retries: int | None = None

    def __post_init__(self) -> None:
        if not (self.initial >= 0 and math.isfinite(self.initial)):
            raise ValueError(f"initial must be a finite number >= 0, got {self.initial!r}")
        if not self.cap >= 0:  # a cap below initial caps every delay (tests shorten the sink's waits so)
            raise ValueError(f"cap must be >= 0, got {self.cap!r}")
        if not self.factor >= 1:
            raise ValueError(f"factor must be >= 1, got {self.factor!r}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter must be within [0, 1], got {self.jitter!r}")
        if self.retries is not None and self.retries < 0:
            raise ValueError(f"retries must be >= 0 or None, got {self.retries!r}")

    def delay(self, retry: int, rng: Callable[[], float] = random.random) -> float:
        """The delay before retry number ``retry`` (from 1); ``rng`` draws the jitter in [0, 1)."""
        n = max(1, int(retry))
        try:
            d = min(self.cap, self.initial * self.factor ** (n - 1))
        except OverflowError:  # a long outage: far past the cap
            d = self.cap
        if self.jitter:
            d = d * (1 - self.jitter) + rng() * d * self.jitter
        return d

    def delays(self, rng: Callable[[], float] = random.random) -> Iterator[float]:
        """The delays of retries 1, 2, ... (``retries`` of them, or without end)."""
        n = 0
        while self.retries is None or n < self.retries:
            n += 1
            yield self.delay(n, rng)

    def attempts(self, sleep: Callable[[float], None] = time.sleep) -> Iterator[Attempt]:
        """One :class:`Attempt` per try; sleeps its ``wait`` when the caller asks for the next one."""
        n = 0
        for d in self.delays():
            n += 1
            yield Attempt(n, d)
            sleep(d)
        yield Attempt(n + 1, None)

    async def attempts_async(self) -> AsyncIterator[Attempt]:
        """:meth:`attempts` for coroutines: sleeps with :func:`asyncio.sleep` (cancellable)."""
        n = 0
        for d in self.delays():
            n += 1
            yield Attempt(n, d)
            await asyncio.sleep(d)
        yield Attempt(n + 1, None)
