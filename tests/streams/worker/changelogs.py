"""A changelog topic kept in memory, for in-process tests of the state that is checkpointed to Kafka.

:class:`MemoryStore` keeps the records :class:`streams.worker.changelog_store.ChangelogStore` would
write (the same chunking) in a list and reads them back with the same generation fold; the real store
on the real broker is tested in tests/integration/test_label_changelog.py.
"""

from __future__ import annotations

from streams.worker.changelog_store import ChangelogError, Generation, GenerationFold, chunk_records


class MemoryStore:
    """``put``/``restore`` of :class:`~streams.worker.changelog_store.ChangelogStore` over a list of records
    (``fail``: every put raises :class:`ChangelogError`, as with the broker away)."""

    def __init__(self, chunk_bytes: int = 4096) -> None:
        self.chunk_bytes = chunk_bytes
        self.records: list[tuple[bytes, bytes, list]] = []
        self.fail = False
        self.puts = 0
        self.keys: list[str] = []  # the key of every put, in order

    async def put(self, key: str, gen: int, blob: bytes, route: int = 0) -> int:
        if self.fail:
            raise ChangelogError("broker away")
        self.records += chunk_records(key, gen, blob, self.chunk_bytes)
        self.puts += 1
        self.keys.append(key)
        return len(blob)

    async def restore(self, key: str, route: int = 0) -> Generation | None:
        fold = GenerationFold(key)
        for off, (k, v, h) in enumerate(self.records):
            fold.add(k, v, h, off)
        return fold.newest()

    async def close(self) -> None:
        return None
