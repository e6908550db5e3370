"""Stored references: shared by every worker, surviving restarts, set and reset by operators.

The references live on a Kafka topic (``<topic_inferences>.references``, one
partition, ``cleanup.policy=compact``), keyed ``"model/version"``:

* a worker that built a ``first_n`` reference stores it there (origin
  ``first_n``), with where it ended in the inference stream (topic, partition,
  offset, row), so a restarted worker — or the one that takes the partition
  over — loads it instead of building a different one from what it replays;
* ``driftwatch reference set`` stores one built from a file (origin ``set``);
  it overrides the configured source of that model version (key
  ``"model/*"``: of every version without a ``set`` reference of its own);
* ``driftwatch reference reset`` writes tombstones: the workers go back to the
  configured source (file, the next ``first_n`` events, the rolling window).

Value of a record: the bytes of :meth:`detectors.reference.Reference.to_bytes`,
headers with the metadata (``dw-*``). **Large references are chunked**: a
reference of 5000 rows x 20 features is ~580 kB, with one segment feature
~1.25 MB — over the 1 MB message limit of a default Kafka broker and client.
A blob larger than ``chunk_bytes`` (512 KiB) is written as chunk records
(key ``__chunk__/model/version/<sha256[:16]>/<i>``), then a small JSON
*manifest* under the reference's key (header ``dw-chunks``) with the blob's
size and SHA-256. The manifest is written only after the broker acknowledged
every chunk (one partition: the chunks come before it in the log), and a reader
checks size and checksum; a manifest whose chunks are missing or corrupt is
ignored with a warning (the worker falls back to its configured source), never
half-used. Chunk keys carry the blob's digest, so a new reference never
overwrites the chunks the current manifest points at; the chunks of the
replaced reference are tombstoned after the new manifest is acknowledged.

**Reference rows.** Besides the summary, a stored reference carries its rows
(``rows_blob``, :func:`encode_rows`): the model's features — **except those
declared sensitive** — and the predictions (label, probabilities, value), the
same rows the worker attached when it built the reference. They are what the
row-based evaluators (adversarial scores, multivariate and prediction drift,
feature impact) need, so a reference read back after a restart, or set by the
CLI, runs them too (:meth:`StoredReference.reference` attaches them). Their size
is bounded by the reference's (``first_n`` or the file). They are always written
as chunk records of their own digest (``__chunk__/model/version/<rows sha[:16]>/<i>``)
before the reference's record, whose headers (``dw-rows-sha256``, ``dw-rows-size``,
``dw-rows-chunks``) point at them; missing or corrupt rows are ignored with a
warning (the summary is still used). Older records without those headers load as
summaries only. Raw values then live on this topic as they do on the inference
topic (docs/reliability.md, data minimisation).

Reading "to the end" of a topic without trusting end offsets (tansu reports
them wrong, see design.md): :meth:`ReferenceStore.load` first produces a small
*marker* record to the topic and gets its offset back from the broker's produce
acknowledgement; then it reads the partition from the beginning until it has
passed that offset. Everything stored before the marker was written is
therefore read, on any broker, whatever its ListOffsets answers. Markers are a
few bytes each (one per load; compaction keeps one, brokers without compaction
keep them all: a few KB per day).

:meth:`ReferenceStore.follow` does the same, then keeps reading: a running
worker applies a reference set or reset by the CLI within about a second
(:meth:`streams.worker.pipeline.Pipeline.watch_references`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from detectors.errors import StorageError
from streams.settings import Settings
from streams.worker.changelog_store import (
    CHUNK_BYTES,
    MARKER_PREFIX,
    TopicClient,
    ensure_compacted_topic,
    join_chunks,
    sha256_hex,
    split_chunks,
)
from streams.worker.changelog_store import (
    PRODUCER_MAX_REQUEST as PRODUCER_MAX_REQUEST,  # re-exported: the limit every record stays below
)

log = logging.getLogger(__name__)

CHUNK_PREFIX = "__chunk__/"
ALL_VERSIONS = "*"
"""Version of a reference that applies to every version of a model (``reference set`` without ``--version``)."""
ORIGIN_FIRST_N = "first_n"
"""Built by a worker from the first N events of a model version."""
ORIGIN_SET = "set"
"""Set by an operator (``driftwatch reference set``): overrides the configured source."""
MAX_REFERENCE_BYTES = 256 * 1024 * 1024
"""Refuse to store a larger reference (it would have to be held in every worker's memory)."""
MANIFEST_FORMAT = "driftwatch-reference-manifest"

H_TOPIC = "dw-topic"
H_PARTITION = "dw-partition"
H_END_OFFSET = "dw-end-offset"
H_END_ROW = "dw-end-row"
H_ROWS = "dw-rows"
H_CREATED = "dw-created"
H_ORIGIN = "dw-origin"
H_SOURCE = "dw-source"
H_CHUNKS = "dw-chunks"
H_SHA256 = "dw-sha256"
H_SIZE = "dw-size"
H_INDEX = "dw-index"
H_ROWS_SHA256 = "dw-rows-sha256"
H_ROWS_SIZE = "dw-rows-size"
H_ROWS_CHUNKS = "dw-rows-chunks"
ROWS_FORMAT = "driftwatch-reference-rows"


class ReferenceStoreError(StorageError):
    """The reference topic could not be read or written (the message says why)."""


def references_topic(settings: Settings) -> str:
    """The topic the references live on (derived from the inference topic's name)."""
    return f"{settings.topic_inferences}.references"


def store_key(model_id: str, version: str) -> bytes:
    return f"{model_id}/{version}".encode()


def chunk_key(model_id: str, version: str, sha256: str, index: int) -> str:
    return f"{CHUNK_PREFIX}{model_id}/{version}/{sha256[:16]}/{index}"


def _chunk_owner(key: str) -> tuple[str, str] | None:
    """``(model, version)`` of a chunk key (model ids may contain ``/``)."""
    parts = key[len(CHUNK_PREFIX) :].rsplit("/", 3)
    return (parts[0], parts[1]) if len(parts) == 4 else None


@dataclass(frozen=True, slots=True)
class StoredReference:
    """A reference as stored: its bytes, where it came from and (first_n) where it ended."""

    model_id: str
    version: str
    blob: bytes
    topic: str
    partition: int
    end_pos: tuple[int, int]
    rows: int
    created: float
    origin: str = ORIGIN_FIRST_N
    source: str = ""
    rows_blob: bytes = b""  # encode_rows(...) of the reference's rows (b"": summary only)

    @property
    def sha256(self) -> str:
        return sha256_hex(self.blob)

    def reference(self, rows: bool = True):
        """The :class:`~detectors.reference.Reference`, with its rows attached when stored (``rows``)."""
        from detectors.reference import Reference

        ref = Reference.from_bytes(self.blob)
        if rows and self.rows_blob:
            try:
                frame = decode_rows(self.rows_blob)
            except ValueError as e:  # summaries still work: only the row-based evaluators stay silent
                log.warning(
                    "the stored rows of the reference of %s/%s are unusable (%s): summary only",
                    self.model_id,
                    self.version,
                    e,
                )
                return ref
            from detectors.reference import attach_reference_frame

            attach_reference_frame(ref, frame)
        return ref


def json_column(values) -> np.ndarray:
    """An object column (str/None/numbers) as JSON bytes in a uint8 array: storable in an .npz
    without pickle; :func:`object_column` reads it back."""
    import orjson

    return np.frombuffer(
        orjson.dumps(np.asarray(values, dtype=object).tolist(), option=orjson.OPT_SERIALIZE_NUMPY), dtype=np.uint8
    )


def object_column(data: np.ndarray) -> np.ndarray:
    """The object column :func:`json_column` stored."""
    import orjson

    values = orjson.loads(bytes(data))
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def encode_rows(frame, features) -> bytes:
    """The reference rows to store: each feature's column — sensitive features left out — and the
    predictions, as NPZ (plain arrays, categories as JSON text, a JSON header; no pickle).

    >>> import numpy as np
    >>> from detectors.frame import Frame
    >>> from detectors.spec import FeatureSpec
    >>> f = Frame.from_columns(event_id=np.array(["a", "b"], dtype=object), event_time=np.zeros(2),
    ...     numeric={"x": np.array([1.0, np.nan]), "secret": np.array([7.0, 8.0])},
    ...     categorical={"c": np.array(["u", None], dtype=object)},
    ...     pred_label=np.array(["1", "0"], dtype=object))
    >>> feats = [FeatureSpec(name="x", kind="numeric"), FeatureSpec(name="secret", kind="numeric", sensitive=True),
    ...          FeatureSpec(name="c", kind="categorical")]
    >>> blob = encode_rows(f, feats)
    >>> back = decode_rows(blob)
    >>> sorted(back.numeric), back.categorical["c"].tolist(), back.pred_label.tolist(), rows_info(blob)["withheld"]
    (['x'], ['u', None], ['1', '0'], ['secret'])
    """
    n = len(frame)
    arrays: dict[str, np.ndarray] = {}
    numeric: list[str] = []
    categorical: list[str] = []
    withheld = [f.name for f in features if f.sensitive]
    for f in features:
        if f.sensitive:
            continue
        if f.kind == "numeric" and f.name in frame.numeric:
            arrays[f"num{len(numeric)}"] = np.asarray(frame.numeric[f.name], dtype=np.float64)
            numeric.append(f.name)
        elif f.kind == "categorical" and f.name in frame.categorical:
            arrays[f"cat{len(categorical)}"] = json_column(frame.categorical[f.name])
            categorical.append(f.name)
    if frame.pred_label is not None:
        arrays["pred_label"] = json_column(frame.pred_label)
    if frame.pred_proba is not None:
        arrays["pred_proba"] = np.asarray(frame.pred_proba, dtype=np.float64)
    if frame.pred_value is not None:
        arrays["pred_value"] = np.asarray(frame.pred_value, dtype=np.float64)
    if frame.label is not None:  # true labels of a labelled reference file: CBPE calibrates on them
        arrays["label"] = json_column(frame.label)
    meta = {
        "format": ROWS_FORMAT,
        "version": 1,
        "n": n,
        "numeric": numeric,
        "categorical": categorical,
        "withheld": withheld,
        "classes": list(frame.classes),
    }
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def _rows_npz(blob: bytes) -> tuple[dict, dict[str, np.ndarray]]:
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
        meta = json.loads(bytes(data.pop("meta")).decode())
    except Exception as e:  # zip/json/key errors all mean "not ours"
        raise ValueError(f"not stored reference rows: {e}") from None
    if meta.get("format") != ROWS_FORMAT or meta.get("version") != 1:
        raise ValueError(f"not stored reference rows of version 1: format={meta.get('format')!r}")
    return meta, data


def rows_info(blob: bytes) -> dict:
    """The header of stored rows: ``n``, ``numeric``, ``categorical``, ``withheld`` (sensitive), ``classes``."""
    return _rows_npz(blob)[0]


def decode_rows(blob: bytes):
    """Inverse of :func:`encode_rows`: a :class:`~detectors.frame.Frame` (no event ids or times)."""
    from detectors.frame import Frame

    meta, data = _rows_npz(blob)
    n = int(meta["n"])
    try:
        numeric = {name: data[f"num{i}"] for i, name in enumerate(meta["numeric"])}
        categorical = {name: object_column(data[f"cat{i}"]) for i, name in enumerate(meta["categorical"])}
        label = object_column(data["pred_label"]) if "pred_label" in data else None
        truth = object_column(data["label"]) if "label" in data else None
        cols = [
            *numeric.values(),
            *categorical.values(),
            *(x for x in (label, data.get("pred_proba"), data.get("pred_value"), truth) if x is not None),
        ]
    except (KeyError, ValueError) as e:
        raise ValueError(f"stored reference rows are incomplete: {e}") from None
    if any(c.shape[0] != n for c in cols):
        raise ValueError("stored reference rows have columns of different lengths")
    return Frame.from_columns(
        event_id=np.full(n, "", dtype=object),
        event_time=np.zeros(n),
        numeric=numeric,
        categorical=categorical,
        pred_label=label,
        pred_proba=data.get("pred_proba"),
        classes=tuple(meta["classes"]),
        pred_value=data.get("pred_value"),
        label=truth,
    )


def applicable(refs: dict[tuple[str, str], StoredReference], model_id: str, version: str) -> StoredReference | None:
    """The stored reference a model version uses, if any.

    An operator's reference of the version beats one set for all versions,
    which beats the version's worker-built ``first_n`` reference.

    >>> a = StoredReference("m", "1", b"", "", -1, (-1, -1), 0, 0.0)
    >>> s = StoredReference("m", "*", b"", "", -1, (-1, -1), 0, 0.0, origin=ORIGIN_SET)
    >>> applicable({("m", "1"): a}, "m", "1") is a, applicable({("m", "1"): a, ("m", "*"): s}, "m", "1") is s
    (True, True)
    """
    exact = refs.get((model_id, version))
    if exact is not None and exact.origin == ORIGIN_SET:
        return exact
    every = refs.get((model_id, ALL_VERSIONS))
    if every is not None and every.origin == ORIGIN_SET:
        return every
    return exact


def ensure_references_topic(settings: Settings) -> str:
    """Create the references topic (1 partition, compacted) if missing.

    No ``max.message.bytes`` override is needed: large references are chunked.
    """
    return ensure_compacted_topic(settings, references_topic(settings), 1)


def _headers(headers) -> dict[str, str]:
    return {k: (v.decode(errors="replace") if isinstance(v, bytes) else str(v)) for k, v in (headers or [])}


class _Fold:
    """The topic's records folded into the current state (last value per key wins)."""

    def __init__(self) -> None:
        self.entries: dict[tuple[str, str], tuple[dict[str, str], bytes, int]] = {}  # headers, value, offset
        self.chunks: dict[str, bytes] = {}
        self.problems: dict[tuple[str, str], str] = {}

    def add(self, rec) -> tuple[str, str] | None:
        """Fold one record in; returns the reference key it changed (None: marker, chunk, foreign)."""
        key = (rec.key or b"").decode(errors="replace")
        if key.startswith(MARKER_PREFIX):
            return None
        if key.startswith(CHUNK_PREFIX):
            if rec.value is None:
                self.chunks.pop(key, None)
            else:
                self.chunks[key] = rec.value
            return None
        if "/" not in key:
            return None
        k = tuple(key.rsplit("/", 1))
        if rec.value is None:
            self.entries.pop(k, None)
        else:
            self.entries[k] = (_headers(rec.headers), rec.value, rec.offset)
        return k

    def get(self, k: tuple[str, str]) -> StoredReference | None:
        """The stored reference under ``k`` (None: absent, or unusable — see ``problems``)."""
        self.problems.pop(k, None)
        entry = self.entries.get(k)
        if entry is None:
            return None
        h, value, offset = entry
        try:
            blob = self._assemble(k, h, value) if H_CHUNKS in h else value
            stored = StoredReference(
                k[0],
                k[1],
                blob,
                h.get(H_TOPIC, ""),
                int(h.get(H_PARTITION, -1)),
                (int(h.get(H_END_OFFSET, -1)), int(h.get(H_END_ROW, -1))),
                int(h.get(H_ROWS, 0)),
                float(h.get(H_CREATED, 0.0)),
                h.get(H_ORIGIN, ORIGIN_FIRST_N),
                h.get(H_SOURCE, ""),
            )
        except (ValueError, KeyError) as e:
            self.problems[k] = f"record at offset {offset}: {e}"
            log.warning("ignoring the stored reference of %s/%s: %s", k[0], k[1], self.problems[k])
            return None
        if H_ROWS_SHA256 in h:  # rows are optional: without them the summary still works
            try:
                rows = self._chunks_of(k, int(h[H_ROWS_CHUNKS]), h[H_ROWS_SHA256], int(h[H_ROWS_SIZE]))
                stored = dataclasses.replace(stored, rows_blob=rows)
            except (ValueError, KeyError) as e:
                log.warning(
                    "the stored reference of %s/%s has no usable rows (%s): summary only; the "
                    "row-based evaluators stay silent for it",
                    k[0],
                    k[1],
                    e,
                )
        return stored

    def _assemble(self, k: tuple[str, str], h: dict[str, str], value: bytes) -> bytes:
        manifest = json.loads(value)
        if manifest.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"not a reference manifest: format={manifest.get('format')!r}")
        n, sha, size = int(manifest["chunks"]), str(manifest["sha256"]), int(manifest["size"])
        return self._chunks_of(k, n, sha, size)

    def _chunks_of(self, k: tuple[str, str], n: int, sha: str, size: int) -> bytes:
        return join_chunks((self.chunks.get(chunk_key(k[0], k[1], sha, i)) for i in range(n)), size, sha)

    def chunk_keys(self, k: tuple[str, str]) -> set[str]:
        return {c for c in self.chunks if _chunk_owner(c) == k}

    def snapshot(self) -> dict[tuple[str, str], StoredReference]:
        out = {}
        for k in list(self.entries):
            got = self.get(k)
            if got is not None:
                out[k] = got
        return out


class ReferenceStore:
    """Load, save, reset and follow references on the references topic (see module docstring)."""

    def __init__(self, settings: Settings, timeout: float = 30.0, chunk_bytes: int = CHUNK_BYTES) -> None:
        self.settings = settings
        self.topic = references_topic(settings)
        self.timeout = timeout
        self.chunk_bytes = int(chunk_bytes)
        self.problems: dict[tuple[str, str], str] = {}  # unusable records seen by the last load
        self.client = TopicClient(
            settings, self.topic, name="driftwatch-references", timeout=timeout, compression="gzip"
        )
        self.client.error = ReferenceStoreError
        self._lock = asyncio.Lock()
        self._chunks: dict[tuple[str, str], set[str]] = {}  # chunk keys seen or written per reference

    async def close(self) -> None:
        await self.client.close()

    async def _send(self, key: str | bytes, value: bytes | None, headers=None):
        """Send one record to partition 0; returns the future of its acknowledgement."""
        return await self.client.send(key, value, 0, headers)

    async def _send_chunks(self, model_id: str, version: str, blob: bytes, written: set[str]) -> tuple[str, int]:
        """Write ``blob`` as chunk records of its own digest; returns ``(sha256, chunks)`` once all are acknowledged."""
        sha = sha256_hex(blob)
        parts = split_chunks(blob, self.chunk_bytes)
        keys = [chunk_key(model_id, version, sha, i) for i in range(len(parts))]
        written.update(keys)
        await self.client.send_all(
            (
                (k.encode(), c, [(H_SHA256, sha.encode()), (H_INDEX, str(i).encode())])
                for i, (k, c) in enumerate(zip(keys, parts))
            ),
            0,
        )
        return sha, len(parts)

    async def save(self, stored: StoredReference) -> None:
        """Store a reference (chunked if large); returns once the broker has acknowledged it."""
        k = (stored.model_id, stored.version)
        blob = stored.blob
        what = f"the reference of {stored.model_id}/{stored.version} ({len(blob)} bytes) on {self.topic}"
        if len(blob) > MAX_REFERENCE_BYTES:
            raise ReferenceStoreError(f"cannot store {what}: larger than {MAX_REFERENCE_BYTES} bytes")
        headers = [
            (H_TOPIC, stored.topic.encode()),
            (H_PARTITION, str(stored.partition).encode()),
            (H_END_OFFSET, str(stored.end_pos[0]).encode()),
            (H_END_ROW, str(stored.end_pos[1]).encode()),
            (H_ROWS, str(stored.rows).encode()),
            (H_CREATED, repr(stored.created).encode()),
            (H_ORIGIN, stored.origin.encode()),
            (H_SOURCE, stored.source[:1000].encode()),
        ]
        written: set[str] = set()
        rows = stored.rows_blob
        if len(rows) > MAX_REFERENCE_BYTES:
            log.warning(
                "the rows of %s (%d bytes) are larger than %d bytes: storing the summary only (the "
                "row-based evaluators stay silent after a restart)",
                what,
                len(rows),
                MAX_REFERENCE_BYTES,
            )
            rows = b""
        try:
            if rows:  # rows first, as chunks of their own digest; the record below points at them
                rsha, rn = await self._send_chunks(stored.model_id, stored.version, rows, written)
                headers += [
                    (H_ROWS_SHA256, rsha.encode()),
                    (H_ROWS_SIZE, str(len(rows)).encode()),
                    (H_ROWS_CHUNKS, str(rn).encode()),
                ]
            if len(blob) <= self.chunk_bytes:
                value = blob
            else:  # every chunk before the manifest
                sha, n = await self._send_chunks(stored.model_id, stored.version, blob, written)
                value = json.dumps(
                    {"format": MANIFEST_FORMAT, "version": 1, "chunks": n, "sha256": sha, "size": len(blob)}
                ).encode()
                headers += [(H_CHUNKS, str(n).encode()), (H_SHA256, sha.encode()), (H_SIZE, str(len(blob)).encode())]
            await asyncio.wait_for(await self._send(store_key(*k), value, headers), self.timeout)
        except ReferenceStoreError:
            raise
        except Exception as e:
            raise ReferenceStoreError(f"cannot store {what}: {type(e).__name__}: {e}") from e
        stale = self._chunks.get(k, set()) - written
        self._chunks[k] = written
        await self._tombstone(stale)

    async def _tombstone(self, keys) -> None:
        """Delete chunk records no manifest points at any more (best effort: they are only garbage)."""
        try:
            await self.client.send_all(((c.encode(), None, []) for c in sorted(keys)), 0)
        except Exception as e:
            log.warning("could not delete %d stale reference chunk(s) on %s: %s", len(keys), self.topic, e)

    async def reset(self, model_id: str, version: str) -> None:
        """Forget a stored reference (tombstones for it and its chunks)."""
        k = (model_id, version)
        if k not in self._chunks:  # learn its chunk keys (the CLI has loaded already)
            await self.load()
        try:
            await asyncio.wait_for(await self._send(store_key(model_id, version), None), self.timeout)
        except Exception as e:
            raise ReferenceStoreError(
                f"cannot reset the reference of {model_id}/{version} on {self.topic}: {type(e).__name__}: {e}"
            ) from e
        await self._tombstone(self._chunks.pop(k, set()))

    async def _read_snapshot(self) -> tuple[_Fold, Any, Any]:
        """A started consumer that has read everything up to a new marker, the fold of what it read, its tp."""
        marker_offset = await self.client.marker(uuid.uuid4().hex, 0)
        consumer, tp = await self.client.consumer(0)
        try:
            fold = _Fold()
            await self.client.read_until(consumer, tp, marker_offset, fold.add)
        except BaseException:
            await consumer.stop()
            raise
        return fold, consumer, tp

    async def load(self) -> dict[tuple[str, str], StoredReference]:
        """Every stored reference, read up to a marker written just before (see module docstring)."""
        async with self._lock:
            fold, consumer, _tp = await self._read_snapshot()
            await consumer.stop()
            return self._learn(fold)

    def _learn(self, fold: _Fold) -> dict[tuple[str, str], StoredReference]:
        out = fold.snapshot()
        self.problems = dict(fold.problems)
        owners = {o for c in fold.chunks if (o := _chunk_owner(c)) is not None}
        for k in set(fold.entries) | owners:
            self._chunks[k] = fold.chunk_keys(k)
        return out

    async def follow(
        self,
        on_snapshot: Callable[[dict[tuple[str, str], StoredReference]], Awaitable[None]],
        on_change: Callable[[tuple[str, str], StoredReference | None], Awaitable[None]],
        poll_ms: int = 1000,
    ) -> None:
        """Load every reference (``on_snapshot``), then report changes (``on_change``) until cancelled.

        Changes read in one poll are reported once per key, as its latest state.

        A change is a new or replaced reference, or ``None`` for a reset (or an
        unusable record: the reader falls back as after a reset). Errors propagate:
        the caller retries with a new ``follow`` (which starts with a new snapshot).
        """
        fold, consumer, tp = await self._read_snapshot()
        try:
            await on_snapshot(self._learn(fold))
            while True:
                batch = await consumer.getmany(tp, timeout_ms=poll_ms)
                changed: list[tuple[str, str]] = []
                for rec in batch.get(tp, []):
                    k = fold.add(rec)
                    if k is not None and k not in changed:
                        changed.append(k)
                for k in changed:
                    got = fold.get(k)
                    self._chunks[k] = fold.chunk_keys(k)
                    await on_change(k, got)
        finally:
            await consumer.stop()
