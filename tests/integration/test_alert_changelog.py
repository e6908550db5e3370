"""The alert-state changelog on the real broker: what one worker checkpoints, the next owner restores.

:class:`streams.alerts.partitions.AlertPartitions` over the real
:class:`~streams.worker.changelog_store.ChangelogStore` on the session's tansu broker (whose end
offsets are wrong: the reader must not trust them). Prints the latency of the acknowledged write a
window that changed an alert's status waits for (docs/alerts.md, "Measured").
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time

import pytest

from streams.alerts.lifecycle import AlertState
from streams.alerts.partitions import AlertPartitions, alert_changelog, changelog_topic, ensure_changelog_topic

pytestmark = pytest.mark.integration


def states(i: int) -> list[AlertState]:
    """20 firing alerts (4 models x 5 features) after ``i`` breaching windows."""
    return [
        AlertState(
            f"m{j}/1/r{{feature=f{k}}}", f"m{j}", "1", "r", "warning", {"feature": f"f{k}"}, "firing", consecutive=i
        )
        for j in range(4)
        for k in range(5)
    ]


def test_the_next_owner_restores_the_last_acknowledged_alert_state(settings):
    ensure_changelog_topic(settings)

    async def run():
        a, b = AlertPartitions(alert_changelog(settings)), AlertPartitions(alert_changelog(settings))
        try:
            assert await a.restore([0, 1]) == [0, 1]
            assert a.view(0, "m0", "1").alerts == {}  # never checkpointed
            latency = []
            for i in range(1, 101):
                t0 = time.perf_counter()
                a.update(0, "m0", "1", i, states(i), urgent=True)
                await a.sync(0)
                latency.append(1e3 * (time.perf_counter() - t0))
            a.update(1, "m1", "1", 7, states(7)[:1], urgent=False)  # quiet: written by the timer's flush
            await a.sync(1)
            assert a.checkpoints["count"] == 100
            await a.flush()
            assert await b.restore([0, 1]) == [0, 1]  # another worker (host), right after the last write
            got = b.view(0, "m0", "1")
            assert got.last_window_ns == 100 and got.alerts == {s.key: s for s in states(100)}
            assert b.view(1, "m1", "1").last_window_ns == 7
            b.update(0, "m0", "1", 101, states(101)[:1], urgent=False)
            assert await b.revoke([0]) == [("m0", "1")]  # b hands partition 0 back: its change is written ...
            assert await a.revoke([0]) == [("m0", "1")]  # (a, unchanged since, writes nothing)
            assert await a.restore([0]) == [0]  # ... and a, which had it before, continues from b's state
            back = a.view(0, "m0", "1")
            assert back.last_window_ns == 101 and back.alerts[states(1)[0].key].consecutive == 101
        finally:
            await a.close()
            await b.close()
        latency.sort()
        print(
            f"\nalert-state checkpoint of a window that changed a status (20 alerts, acknowledged): median "
            f"{statistics.median(latency):.1f} ms, p95 {latency[94]:.1f} ms, max {latency[-1]:.1f} ms"
        )

    try:
        asyncio.run(run())
    finally:
        from streams.broker.admin import delete_topics

        with contextlib.suppress(Exception):
            delete_topics(settings, [changelog_topic(settings)])
