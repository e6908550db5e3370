"""The one backoff helper: delays, caps, jitter, attempts (sync and async), and its doctests."""

from __future__ import annotations

import asyncio
import doctest
import time

import pytest

import streams.retry as retry_module
from streams.retry import Attempt, Backoff


def test_doctests() -> None:
    res = doctest.testmod(retry_module)
    assert res.attempted >= 5 and res.failed == 0


def test_delays_match_the_loops_they_replaced() -> None:
    # the InfluxDB sink: 0.25 s doubling to its max_backoff
    assert list(Backoff(0.25, 30.0, retries=10).delays()) == [min(0.25 * 2**i, 30.0) for i in range(10)]
    # the local stack's start-up poll: 0.01 s growing by half to 0.2 s
    got = list(Backoff(0.01, 0.2, factor=1.5, retries=12).delays())
    want, d = [], 0.01
    for _ in range(12):
        want.append(d)
        d = min(d * 1.5, 0.2)
    assert got == pytest.approx(want)


def test_jitter_stays_in_its_band() -> None:
    b = Backoff(1.0, 60.0, jitter=0.5)
    for n in range(1, 10):
        d = min(60.0, 2.0 ** (n - 1))
        for _ in range(20):
            assert d / 2 <= b.delay(n) <= d


def test_unbounded_delays_never_overflow() -> None:
    b = Backoff(0.5, 30.0)
    assert b.delay(10**6) == 30.0
    it = b.delays()
    assert [next(it) for _ in range(200)][-1] == 30.0


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(initial=-1.0),
        dict(cap=-0.5),
        dict(factor=0.5),
        dict(jitter=1.5),
        dict(retries=-1),
        dict(initial=float("nan")),
    ],
)
def test_bad_arguments_are_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        Backoff(**kwargs)


def test_attempts_sleep_between_tries_and_mark_the_last() -> None:
    slept: list[float] = []
    got = list(Backoff(0.5, retries=3).attempts(sleep=slept.append))
    assert got == [Attempt(1, 0.5), Attempt(2, 1.0), Attempt(3, 2.0), Attempt(4, None)]
    assert slept == [0.5, 1.0, 2.0]


def test_attempts_do_not_sleep_after_a_success() -> None:
    slept: list[float] = []
    for attempt in Backoff(0.5, retries=3).attempts(sleep=slept.append):
        if attempt.number == 2:
            break
    assert slept == [0.5]


def test_async_attempts_really_wait() -> None:
    async def run() -> tuple[list[Attempt], float]:
        t0 = time.perf_counter()
        seen = [a async for a in Backoff(0.05, retries=2).attempts_async()]
        return seen, time.perf_counter() - t0

    seen, took = asyncio.run(run())
    assert seen == [Attempt(1, 0.05), Attempt(2, 0.1), Attempt(3, None)]
    assert 0.14 <= took < 1.0
