"""Open summarised windows checkpointed to Kafka, with the input offsets they cover.

A count window of ``window.summary_min_events`` or more keeps a mergeable summary
(:mod:`detectors.summaries`), not its rows. Such a window can hold millions of events:
keeping its messages un-acked until it is written (as row windows do) would keep their
bytes in memory and make a restart re-read the whole window. Instead, every
``every`` seconds (and when partitions are revoked, and at shutdown) the open
window of every stream key (all open windows of a summarised event-time stream key, with the watermark
state; ``window.summary_min_seconds``) is checkpointed here, per input partition, and the
messages whose rows it holds are acked once the broker has acknowledged the
checkpoint. A worker that gets the partition — on this host or another — restores
the open window from the newest complete checkpoint and re-reads only what came after
it (:meth:`streams.worker.windows.CountWindows.resume`).

**Topic.** ``<consumer_group>-<topic_inferences>-window-changelog`` (one per consumer group:
the state goes with the group's offsets), ``Settings.topic_partitions`` partitions,
``cleanup.policy=compact``. Input partition ``p``'s checkpoint is key ``p<p>`` of the generic
:class:`streams.worker.changelog_store.ChangelogStore` on topic partition ``p % n``
(generations cut into chunks with size and SHA-256, the newest complete one wins, the tail
read up to a marker because tansu's end offsets are wrong).

**What a checkpoint of partition p holds.** One entry per stream key (topic, model,
version) of p whose open window is summarised: its sequence number, event count, first
and last row position, the point time of the window before it, and the summary's bytes
(:meth:`detectors.summaries.WindowSummary.to_bytes`; a few hundred KB for 20 features
and 1,024 bins, whatever the window's event count).

**When an entry is taken.** Only when every window the key closed before is confirmed
written to InfluxDB: the entry and the written windows then describe everything before
it, and the checkpoint may release (ack) the messages of the rows it holds. While a
closed window is still on its way, the key's previous entry is carried and its messages
stay held. An entry whose ``seq`` is not after the newest written window's (read back from
InfluxDB, :mod:`streams.worker.checkpoints`) is stale and ignored on restore.

**The reference a summary was opened with.** A summary's bins are cut from its window's reference,
and a window opened before a reference change (``driftwatch reference set`` / ``reset``) is judged
against the reference it was opened with, as an uninterrupted worker does. So beside the checkpoints
of partition p, each summary layout's reference is stored once (key ``ref-<layout fingerprint>``,
the same topic partition; :func:`encode_reference`: ``Reference.to_bytes()`` and its rows, sensitive
features left out, as on the references topic). A worker that restores an entry whose layout is not
its current reference's loads that reference from here, restores the summary on it and judges the
window against it; the new reference applies from the next window. Only if that reference is not
there (a checkpoint written before it was stored, or a changed ``summary_bins``) does the window go on
without the events before the checkpoint, with an ERROR saying how many.
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from detectors.errors import StorageError
from detectors.reference import npz_bytes, npz_read
from streams.settings import Settings
from streams.worker.windows import OpenTimeWindows, OpenWindow

log = logging.getLogger(__name__)

FORMAT = "driftwatch-open-windows"
FORMAT_VERSION = 1
REFERENCE_FORMAT = "driftwatch-window-reference"
REFERENCE_VERSION = 1
CHECKPOINT_SECONDS = 5.0
"""Default time between checkpoints of the open summarised windows."""
MAX_COVERED_MESSAGES = 256
"""A checkpoint is also taken once this many messages wait for one (bounds the worker's un-acked bytes)."""

EntryKey = tuple[str, str, str]  # (topic, model id, model version)


class WindowChangelogError(StorageError):
    """An open-window checkpoint could not be encoded, decoded, read or written (the message says why)."""


def window_changelog_topic(settings: Settings) -> str:
    """The topic the open summarised windows of a consumer group are checkpointed to.

    >>> window_changelog_topic(Settings(topic_inferences="x.inferences", consumer_group="g"))
    'g-x.inferences-window-changelog'
    """
    return f"{settings.consumer_group}-{settings.topic_inferences}-window-changelog"


def ensure_window_changelog_topic(settings: Settings) -> str:
    """Create the changelog topic (``topic_partitions`` partitions, compacted) if missing."""
    from streams.worker.changelog_store import ensure_compacted_topic

    return ensure_compacted_topic(settings, window_changelog_topic(settings), settings.topic_partitions)


def window_store(settings: Settings):
    """The chunked compacted-topic store the checkpoints go to
    (:class:`streams.worker.changelog_store.ChangelogStore`)."""
    from streams.worker.changelog_store import ChangelogStore

    return ChangelogStore(settings, window_changelog_topic(settings), name="driftwatch-window-changelog")


def partition_key(partition: int) -> str:
    """The store key of an input partition's checkpoint.

    >>> partition_key(3)
    'p3'
    """
    return f"p{int(partition)}"


def reference_key(fingerprint: str) -> str:
    """The store key of the reference of summaries of layout ``fingerprint`` (beside a partition's checkpoints).

    >>> reference_key("3f2a")
    'ref-3f2a'
    """
    return f"ref-{fingerprint}"


def encode_reference(reference: Any, features: Any) -> bytes:
    """The reference a summary was opened with, as stored beside the checkpoints: its ``to_bytes()`` and its
    rows (:func:`streams.worker.references.encode_rows`: sensitive features left out), as NPZ (no pickles)."""
    from detectors.reference import reference_frame
    from streams.worker.references import encode_rows

    arrays = {"reference": np.frombuffer(reference.to_bytes(), dtype=np.uint8)}
    rows = reference_frame(reference)
    if rows is not None:
        arrays["rows"] = np.frombuffer(encode_rows(rows, features), dtype=np.uint8)
    return npz_bytes(arrays, {}, REFERENCE_FORMAT, REFERENCE_VERSION, compress=False)


def decode_reference(blob: bytes) -> Any:
    """Inverse of :func:`encode_reference`: the :class:`~detectors.reference.Reference`, rows attached
    (:class:`WindowChangelogError` on foreign or damaged data)."""
    from detectors.reference import ReferenceDataError
    from streams.worker.references import StoredReference

    _meta, data = npz_read(blob, REFERENCE_FORMAT, REFERENCE_VERSION, "open window's reference", WindowChangelogError)
    try:
        rows = data["rows"].tobytes() if "rows" in data else b""
        stored = StoredReference("", "", data["reference"].tobytes(), "", -1, (-1, -1), 0, 0.0, rows_blob=rows)
        return stored.reference()
    except (KeyError, ValueError, ReferenceDataError) as e:
        raise WindowChangelogError(f"damaged open window's reference: {type(e).__name__}: {e}") from None


@dataclass(frozen=True, slots=True)
class Entry:
    """One stream key's open window(s) as stored, summaries as bytes (decoded by the pipeline, which has the
    layout).

    A count window: the :class:`~streams.worker.windows.OpenWindow` fields, its summary's layout fingerprint and
    bytes. Event-time windows (``kind == "time"``): ``seq`` is the next window's number, ``n`` the rows of all
    open windows, ``last_pos`` the last row taken, ``max_event_time`` and ``closed_until`` the watermark state,
    and ``windows`` one ``(window index, rows, first offset, last offset, layout fingerprint, summary bytes)``
    per open window (:class:`~streams.worker.windows.OpenTimeWindows`).
    """

    seq: int
    n: int
    start_pos: tuple[int, int]
    last_pos: tuple[int, int]
    last_time_ns: int
    fingerprint: str
    summary: bytes
    kind: str = "count"
    windows: tuple[tuple[int, int, int, int, str, bytes], ...] = ()
    max_event_time: float = -math.inf
    closed_until: float = -math.inf

    @classmethod
    def of(cls, ow: OpenWindow | OpenTimeWindows) -> Entry:
        """The entry of open window(s) (serialises the summaries now)."""
        if isinstance(ow, OpenTimeWindows):
            wins = tuple((w, n, a, b, s.layout.fingerprint, s.to_bytes()) for w, n, a, b, s in ow.windows)
            start = (min(w[2] for w in wins), 0) if wins else ow.last_pos
            return cls(ow.seq, ow.n, start, ow.last_pos, -1, "", b"", "time", wins, ow.max_event_time, ow.closed_until)
        return cls(
            ow.seq,
            ow.n,
            ow.start_pos,
            ow.last_pos,
            ow.last_time_ns,
            ow.summary.layout.fingerprint,
            ow.summary.to_bytes(),
        )

    @property
    def fingerprints(self) -> list[str]:
        """The layout fingerprint of every summary in the entry."""
        return [w[4] for w in self.windows] if self.kind == "time" else [self.fingerprint]

    def open_window(self, summary: Any) -> OpenWindow:
        return OpenWindow(self.seq, self.n, self.start_pos, self.last_pos, self.last_time_ns, summary)

    def open_time_windows(self, summaries: list[Any]) -> OpenTimeWindows:
        """The event-time windows of a ``kind == "time"`` entry, with their decoded ``summaries`` (in order)."""
        wins = tuple((w, n, a, b, s) for (w, n, a, b, _f, _blob), s in zip(self.windows, summaries, strict=True))
        return OpenTimeWindows(self.seq, wins, self.last_pos, self.max_event_time, self.closed_until)


def encode_entries(entries: dict[EntryKey, Entry]) -> bytes:
    """One partition's checkpoint (NPZ, no pickles; the summaries are compressed already).

    >>> e = Entry(3, 10, (5, 0), (9, 2), 123, "f", b"xyz")
    >>> t = Entry(4, 7, (1, 0), (9, 3), -1, "", b"", "time", ((8, 7, 1, 9, "f", b"ab"),), 90.5, 60.0)
    >>> decode_entries(encode_entries({("t", "m", "1"): e, ("t", "k", "1"): t})) == {
    ...     ("t", "m", "1"): e, ("t", "k", "1"): t}
    True
    """
    meta = []
    arrays: dict[str, np.ndarray] = {}
    for i, (k, e) in enumerate(sorted(entries.items())):
        m: dict[str, Any] = {
            "key": list(k),
            "seq": e.seq,
            "n": e.n,
            "start": list(e.start_pos),
            "last": list(e.last_pos),
            "last_time_ns": e.last_time_ns,
            "fingerprint": e.fingerprint,
        }
        arrays[f"s{i}"] = np.frombuffer(e.summary, dtype=np.uint8)
        if e.kind == "time":  # the watermark state travels as its exact float's repr (JSON has no -inf)
            m["kind"] = "time"
            m["watermark"] = [repr(float(e.max_event_time)), repr(float(e.closed_until))]
            m["windows"] = [[w, n, a, b, f] for w, n, a, b, f, _blob in e.windows]
            for j, w in enumerate(e.windows):
                arrays[f"s{i}_{j}"] = np.frombuffer(w[5], dtype=np.uint8)
        meta.append(m)
    return npz_bytes(arrays, {"entries": meta}, FORMAT, FORMAT_VERSION, compress=False)


def decode_entries(blob: bytes) -> dict[EntryKey, Entry]:
    """Inverse of :func:`encode_entries` (:class:`WindowChangelogError` on foreign data)."""
    meta, data = npz_read(blob, FORMAT, FORMAT_VERSION, "open-window checkpoint", WindowChangelogError)
    out: dict[EntryKey, Entry] = {}
    try:
        for i, m in enumerate(meta["entries"]):
            t, model, version = (str(x) for x in m["key"])
            time_kw: dict[str, Any] = {}
            if m.get("kind") == "time":
                time_kw = {
                    "kind": "time",
                    "max_event_time": float(m["watermark"][0]),
                    "closed_until": float(m["watermark"][1]),
                    "windows": tuple(
                        (int(w), int(n), int(a), int(b), str(f), data[f"s{i}_{j}"].tobytes())
                        for j, (w, n, a, b, f) in enumerate(m["windows"])
                    ),
                }
            out[(t, model, version)] = Entry(
                int(m["seq"]),
                int(m["n"]),
                (int(m["start"][0]), int(m["start"][1])),
                (int(m["last"][0]), int(m["last"][1])),
                int(m["last_time_ns"]),
                str(m["fingerprint"]),
                data[f"s{i}"].tobytes(),
                **time_kw,
            )
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise WindowChangelogError(f"damaged open-window checkpoint: {type(e).__name__}: {e}") from None
    return out


class WindowChangelog:
    """Reads and writes the open-window checkpoints of input partitions on ``store`` (see module docstring).

    ``store``: :func:`window_store` (or any object with its async ``put(key, gen, blob, route)``,
    ``restore(key, route)`` — an object with ``gen`` and ``blob``, or None — and ``close()``). ``every``:
    seconds between checkpoints; ``max_covered``: messages waiting for a checkpoint that make
    one due earlier.
    """

    def __init__(self, store: Any, every: float = CHECKPOINT_SECONDS, max_covered: int = MAX_COVERED_MESSAGES) -> None:
        self.store = store
        self.every = float(every)
        self.max_covered = int(max_covered)
        self._gen: dict[int, int] = {}  # input partition -> generation last restored or written
        self._refs: set[tuple[int, str]] = set()  # (partition, layout fingerprint) whose reference is stored
        self.lock = asyncio.Lock()  # one checkpoint at a time (generations in order)
        #: checkpoints written: count, bytes, seconds (encode + broker acknowledgement), the last one's
        self.stats = {"count": 0, "bytes": 0, "seconds": 0.0, "last_bytes": 0, "last_ms": 0.0}

    def __repr__(self) -> str:
        return repr(self.store)

    async def load(self, partition: int) -> dict[EntryKey, Entry]:
        """The entries of ``partition``'s newest complete checkpoint ({} if none)."""
        got = await self.store.restore(partition_key(partition), route=int(partition))
        if got is None:
            return {}
        self._gen[int(partition)] = max(self._gen.get(int(partition), 0), int(got.gen))
        try:
            return decode_entries(got.blob)
        except WindowChangelogError:  # a damaged checkpoint: the windows restart from InfluxDB's checkpoints
            log.exception("the open-window checkpoint of partition %d is unusable", partition)
            return {}

    async def save(self, partition: int, entries: dict[EntryKey, Entry]) -> int:
        """Write the checkpoint of ``partition``; returns once the broker acknowledged it (bytes written)."""
        blob = encode_entries(entries)
        gen = self._gen.get(int(partition), 0) + 1
        await self.store.put(partition_key(partition), gen, blob, route=int(partition))
        self._gen[int(partition)] = gen
        return len(blob)

    def forget(self, partition: int) -> None:
        """The partition left: its next checkpoint here follows what is restored then."""
        self._gen.pop(int(partition), None)
        self._refs = {r for r in self._refs if r[0] != int(partition)}

    def has_reference(self, partition: int, fingerprint: str) -> bool:
        """Whether the reference of layout ``fingerprint`` is known to be stored beside ``partition``'s checkpoints."""
        return (int(partition), fingerprint) in self._refs

    async def save_reference(self, partition: int, fingerprint: str, blob: bytes) -> int:
        """Store the reference of layout ``fingerprint`` (:func:`encode_reference` bytes) beside ``partition``'s
        checkpoints, once; returns the bytes written (0: stored already)."""
        if self.has_reference(partition, fingerprint):
            return 0
        await self.store.put(reference_key(fingerprint), 1, blob, route=int(partition))
        self._refs.add((int(partition), fingerprint))
        return len(blob)

    async def load_reference(self, partition: int, fingerprint: str) -> Any:
        """The reference of layout ``fingerprint`` stored beside ``partition``'s checkpoints (None: not there, or
        unusable — a WARNING says why)."""
        got = await self.store.restore(reference_key(fingerprint), route=int(partition))
        if got is None:
            return None
        try:
            ref = decode_reference(got.blob)
        except WindowChangelogError as e:
            log.warning(
                "the reference of layout %s beside partition %d's checkpoints is unusable: %s",
                fingerprint,
                partition,
                e,
            )
            return None
        self._refs.add((int(partition), fingerprint))
        return ref

    async def close(self) -> None:
        await self.store.close()
