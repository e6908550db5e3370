"""A sink for in-process pipeline tests: keeps every record and confirms each write at once."""

from __future__ import annotations

import asyncio


class CollectSink:
    """``streams.influx.sink.InfluxSink``'s ``submit`` without InfluxDB: ``records`` holds what was written."""

    def __init__(self) -> None:
        self.records: list = []

    async def submit(self, records) -> asyncio.Future:
        self.records.extend(records)
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut
