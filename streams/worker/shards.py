"""One hot model across workers: partial windows of its shards, and the merge step that joins them.

A model monitored with ``shards: N`` has its events spread by the SDK over N partitions of the
inferences topic (:func:`streams.wire.contract.shard_partitions`; an event's shard is a function of its
id, so a label goes where its prediction went). Each partition is a **shard**: whichever worker owns it
closes count windows of ``size_events / N`` events (always summarised,
:class:`~detectors.summaries.WindowSummary`) and, instead of testing them, publishes each as a
:class:`Partial` to the group's partials topic (``<consumer_group>-<inferences topic>-partials``), keyed by
the model and sent to the model's home partition there, so one worker of the group — the owner of that
partition — is the model's **merge owner**.

Window identity: window ``k`` of the model is the union of window ``k`` of every shard (shard windows are
numbered from 0 per partition, like any count window, and restart where they were after a rebalance or a
crash). It holds ``size_events`` events when the shards are balanced (the SDK spreads by a hash of the
event id). :class:`MergeBuffer` keeps the partials of the windows not yet complete; once every shard's
partial of window ``k`` is in, it is merged (in shard order, so float sums add up in the same order
whoever merges) and tested like any summarised window, and its points are written once, as one worker
with all the traffic would write them (measurement, tags, fields; the ``dw_window`` checkpoint carries
the merged window's number).

* **Idle or slow shard**: window ``k`` waits for it; nothing is tested before every shard's partial of
  ``k`` is in. A shard that goes quiet closes its partial window after ``idle_close_seconds`` like any
  count window (it then holds fewer events), so when the whole model goes quiet its last window is
  still written. A shard that never receives an event holds the model's windows back: the SDK's
  hash spreads every busy model over all its shards.
* **Late or repeated partial** (a shard re-read after a crash publishes a window again): a window
  already written is not written again (its partial is dropped); a window not yet complete keeps the
  newest copy (the same rows).
* **Restart of the merge owner**: the partials stay un-acked until the merged window is written, so a
  new owner re-reads them; it starts after the newest merged window in InfluxDB.

**Labels** go to the shard of the event id they answer, so each shard's worker joins them
(:class:`streams.worker.labels.LabelHook`, one join per shard). A shard attributes nothing: it publishes
its joined rows in numbered batches (:class:`ShardRows`, on the same partials partition as its partials),
each one only after a label-join checkpoint holding it was acknowledged, so a worker that restores the
shard publishes the same rows under the same number. The merge owner keeps, per shard, the newest batch
number it holds (in its own label-join checkpoint, the partials partition's merge slot) and drops a batch
it has; it attributes the rows to the merged windows and computes realized performance, the error stream
and CBPE's calibration rows as for an unsharded model (docs/scale-out.md says what is exact).

Pure: no I/O here (the pipeline publishes, consumes and writes).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from detectors.errors import InvalidInputError
from detectors.frame import Frame
from detectors.summaries import SummaryLayout, WindowSummary, merge
from streams.worker.windows import Checkpoint, ClosedWindow, CloseReason, Position

FORMAT = "driftwatch-partial-window"
FORMAT_VERSION = 1
MAX_PARTIAL_BYTES = 16 << 20
"""Largest partial (the partials topic is created with this ``max.message.bytes``, Kafka's default being 1 MiB):
a partial of 20 features with the default 1,024 bins and 2,000 sampled rows is ~230 kB."""


class PartialError(InvalidInputError):
    """A message of the partials topic that is not a partial window this worker can use."""


def partials_topic(consumer_group: str, topic_inferences: str) -> str:
    """The partials topic of a worker group (one per group, like the changelogs)."""
    return f"{consumer_group}-{topic_inferences}-partials"


ROWS_FORMAT = "driftwatch-shard-rows"
ROWS_FORMAT_VERSION = 1

PARTIALS_TOPIC_CONFIGS = {"cleanup.policy": "delete", "max.message.bytes": str(MAX_PARTIAL_BYTES)}
"""Every partial counts (not compacted); large enough for big layouts."""


@dataclass(frozen=True, slots=True)
class Partial:
    """Window ``seq`` of one shard (input ``partition``) of a model version, as published by its worker.

    ``time_ns``: the shard window's point time; ``reason``: why it closed (``full``/``idle``);
    ``start_pos``/``end_pos``: its first and last row positions in the input partition;
    ``summary``: :meth:`WindowSummary.to_bytes`.
    """

    model_id: str
    model_version: str
    seq: int
    partition: int
    n: int
    time_ns: int
    reason: str
    start_pos: Position
    end_pos: Position
    summary: bytes

    def to_bytes(self) -> bytes:
        """A JSON header line, then the summary's bytes."""
        head = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "model_id": self.model_id,
            "model_version": self.model_version,
            "seq": self.seq,
            "partition": self.partition,
            "n": self.n,
            "time_ns": self.time_ns,
            "reason": self.reason,
            "start_pos": list(self.start_pos),
            "end_pos": list(self.end_pos),
        }
        return orjson.dumps(head) + b"\n" + self.summary

    @classmethod
    def from_bytes(cls, blob: bytes) -> Partial:
        """Inverse of :meth:`to_bytes`; :class:`PartialError` names what is wrong."""
        head_bytes, sep, summary = blob.partition(b"\n")
        try:
            head = orjson.loads(head_bytes) if sep else None
        except orjson.JSONDecodeError as e:
            raise PartialError(f"partial window: the header is not JSON ({e})") from e
        if not isinstance(head, dict) or head.get("format") != FORMAT:
            raise PartialError(f"partial window: not a {FORMAT} message")
        if head.get("version") != FORMAT_VERSION:
            raise PartialError(f"partial window: version {head.get('version')!r}, this worker reads {FORMAT_VERSION}")
        try:
            return cls(
                model_id=str(head["model_id"]),
                model_version=str(head["model_version"]),
                seq=int(head["seq"]),
                partition=int(head["partition"]),
                n=int(head["n"]),
                time_ns=int(head["time_ns"]),
                reason=str(head["reason"]),
                start_pos=(int(head["start_pos"][0]), int(head["start_pos"][1])),
                end_pos=(int(head["end_pos"][0]), int(head["end_pos"][1])),
                summary=summary,
            )
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise PartialError(f"partial window: header field {e} missing or of the wrong type") from e


@dataclass(frozen=True, slots=True)
class ShardRows:
    """Batch ``seq`` of the rows the label join of shard ``partition`` of ``model_id`` joined
    (a :class:`detectors.concept.Joined`, maybe none) and the join's counters then, for the model's merge owner."""

    model_id: str
    partition: int
    seq: int
    rows: Any
    stats: dict[str, int] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        """A JSON header line, then the rows' columns as NPZ (no pickle)."""
        import io

        from streams.worker.labels import joined_arrays

        arrays: dict[str, np.ndarray] = {}
        classes = joined_arrays(self.rows, "", arrays)
        head = {
            "format": ROWS_FORMAT,
            "version": ROWS_FORMAT_VERSION,
            "model_id": self.model_id,
            "partition": self.partition,
            "seq": self.seq,
            "classes": classes,
            "stats": self.stats,
        }
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        return orjson.dumps(head) + b"\n" + buf.getvalue()

    @classmethod
    def from_head(cls, head: dict[str, Any], body: bytes) -> ShardRows:
        import io

        from streams.worker.labels import joined_from_arrays

        if head.get("version") != ROWS_FORMAT_VERSION:
            raise PartialError(f"shard rows: version {head.get('version')!r}, this worker reads {ROWS_FORMAT_VERSION}")
        try:
            with np.load(io.BytesIO(body), allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
            return cls(
                str(head["model_id"]),
                int(head["partition"]),
                int(head["seq"]),
                joined_from_arrays(data, "", head["classes"]),
                {str(k): int(v) for k, v in head.get("stats", {}).items()},
            )
        except (KeyError, TypeError, ValueError, OSError) as e:
            raise PartialError(f"shard rows: {e!r}") from e


def read_message(blob: bytes) -> Partial | ShardRows:
    """A message of the partials topic: a partial window or a shard's joined rows (:class:`PartialError` if neither)."""
    head_bytes, sep, body = blob.partition(b"\n")
    try:
        head = orjson.loads(head_bytes) if sep else None
    except orjson.JSONDecodeError as e:
        raise PartialError(f"partials topic: the header is not JSON ({e})") from e
    if isinstance(head, dict) and head.get("format") == ROWS_FORMAT:
        return ShardRows.from_head(head, body)
    return Partial.from_bytes(blob)


def partial_of(model_id: str, model_version: str, partition: int, w: ClosedWindow) -> Partial:
    """The partial a shard publishes for its closed window ``w`` (which must keep a summary)."""
    if w.summary is None:
        raise PartialError(f"{model_id}: shard window #{w.seq} of partition {partition} kept rows, not a summary")
    return Partial(
        model_id,
        model_version,
        w.seq,
        partition,
        w.n,
        w.time_ns,
        w.reason,
        w.start_pos,
        w.end_pos,
        w.summary.to_bytes(),
    )


@dataclass(slots=True)
class Complete:
    """A window every shard's partial of which is in: its partials in shard order and their tokens."""

    seq: int
    partials: list[Partial]
    tokens: list[Any]


@dataclass(slots=True)
class Added:
    """What :meth:`MergeBuffer.add` did with one partial: the windows it completed, or why it was dropped."""

    complete: list[Complete] = field(default_factory=list)
    dropped: str | None = None  # "written" (the window is written already) or "unexpected" (not a shard)
    replaced: list[Any] = field(default_factory=list)  # token of an older copy of the same partial (release it)


class MergeBuffer:
    """The partials of one model version's windows not yet complete (see module docstring).

    ``shards``: the input partitions of its shards, in shard order; ``last_seq``: the newest window
    written (-1: none).
    """

    def __init__(self, shards: Sequence[int], last_seq: int = -1) -> None:
        if not shards or len(set(shards)) != len(shards):
            raise ValueError(f"shards: distinct partitions needed, got {list(shards)}")
        self.shards = tuple(int(p) for p in shards)
        self.last_seq = int(last_seq)
        self._open: dict[int, dict[int, tuple[Partial, Any]]] = {}

    @property
    def waiting(self) -> dict[int, list[int]]:
        """Window -> the shards' partitions whose partial it still waits for."""
        return {s: [p for p in self.shards if p not in got] for s, got in sorted(self._open.items())}

    def add(self, p: Partial, token: Any = None) -> Added:
        """Take one partial (``token``: what to release once its window is written)."""
        if p.partition not in self.shards:
            return Added(dropped="unexpected")
        if p.seq <= self.last_seq:
            return Added(dropped="written")
        got = self._open.setdefault(p.seq, {})
        out = Added()
        if p.partition in got:
            out.replaced.append(got[p.partition][1])
        got[p.partition] = (p, token)
        while self._open:  # windows complete in order: a shard publishes its windows in order
            seq = min(self._open)
            got = self._open[seq]
            if len(got) < len(self.shards):
                break
            del self._open[seq]
            self.last_seq = seq
            parts = [got[s] for s in self.shards]
            out.complete.append(Complete(seq, [q for q, _ in parts], [t for _, t in parts]))
        return out

    def tokens(self) -> list[Any]:
        """Tokens of every partial held (for a caller that drops the buffer)."""
        return [t for got in self._open.values() for _, t in got.values()]


def merge_partials(layout: SummaryLayout, partials: Sequence[Partial]) -> WindowSummary:
    """The summary of a whole window from its shards' partials (in the order given: shard order)."""
    if not partials:
        raise ValueError("merge_partials needs at least one partial")
    summaries = [WindowSummary.from_bytes(layout, p.summary) for p in partials]
    out = summaries[0]
    for s in summaries[1:]:
        out = merge(out, s)
    return out


def merged_window(c: Complete, summary: WindowSummary, last_time_ns: int) -> ClosedWindow:
    """The merged window ``c`` as a closed summarised window (what a single worker's window close gives).

    Its point time is the latest of its shards' (strictly after ``last_time_ns``, the merged window
    before it); it closed ``idle`` if any shard's partial did. Its checkpoint positions are
    ``(seq, 0)``: the input positions of each shard are on the shard's own ``dw_shard`` point.
    """
    time_ns = max(max(p.time_ns for p in c.partials), last_time_ns + 1000)
    reason: CloseReason = "idle" if any(p.reason == "idle" for p in c.partials) else "full"
    frame = summary.reservoir.frame
    if frame is None:
        frame = Frame.from_columns(event_id=np.zeros(0, dtype=object), event_time=np.zeros(0))
    ck = Checkpoint(seq=c.seq, start_pos=(c.seq, 0), end_pos=(c.seq, 0), time_ns=time_ns, max_event_time=summary.t_max)
    origin = np.array([c.seq, c.seq], dtype=np.int64)
    return ClosedWindow(
        c.seq,
        frame,
        origin,
        float(summary.t_min),
        float(summary.t_max),
        time_ns,
        reason,
        ck,
        [],
        summary=summary,
    )
