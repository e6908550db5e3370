"""streams.worker.app: the worker's Faust app polls and fetches with short waits (see the module docstring)."""

from __future__ import annotations

import asyncio

from streams.settings import Settings
from streams.worker.app import FETCH_MAX_WAIT_MS, POLL_TIMEOUT_S, App, create_app


def test_the_worker_consumer_fetches_and_polls_with_short_waits(tmp_path):
    """Faust hard-codes a 1.5 s fetch wait and a 1 s poll; a burst of small messages stalled on both."""
    assert FETCH_MAX_WAIT_MS <= 200 and POLL_TIMEOUT_S <= 0.2
    app = create_app(Settings(state_dir=tmp_path))
    assert isinstance(app, App)

    async def main():
        thread = app.consumer._new_consumer_thread()  # makes its own event loop
        try:
            consumer = thread._create_worker_consumer(app.transport)
            try:
                return consumer._fetch_max_wait_ms
            finally:
                await consumer.stop()  # never started, but open until stopped
        finally:
            thread.thread_loop.close()

    try:
        assert asyncio.run(main()) == FETCH_MAX_WAIT_MS
    finally:
        app.consumer._thread.thread_loop.close()  # the consumer's own thread loop, made with the consumer
