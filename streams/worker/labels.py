# size: the label hook's three entry points share the per-model join and performance state
"""Delayed labels: the worker's bridge to :mod:`detectors.concept` and :mod:`detectors.performance`.

The pipeline calls three hooks:

* :meth:`LabelHook.on_predictions` with every decoded frame of inferences:
  the predictions wait in the model's :class:`~detectors.concept.LabelJoin`
  (bounded by ``labels.max_pending``, expiring after ``labels.ttl_seconds``);
* :meth:`LabelHook.on_labels` with every decoded batch of labels (topic
  ``Settings.topic_labels``, key = model id, co-partitioned with the
  inferences so a model's predictions and labels meet in the same worker);
* :meth:`LabelHook.on_window` when a window of the model closes: the rows
  joined since the previous window become realized ``dw_performance`` points
  (accuracy, F1, … or MAE, RMSE …, with label delays), the join's counters
  a ``metric=label_join`` point, and the error-stream detector a
  ``metric=error_stream, detector=fet_online`` point, all at the window's time.

**Concept drift on the error stream** (``labels.online``, on by default for a
model with labels): every joined label gives one 0/1 error (wrong class; for
regression ``|error|`` above ``error_threshold`` or the reference's
``error_quantile`` quantile), fed in label-arrival order to
:class:`detectors.concept.ErrorStreamMonitor` (``FETOnline``: a *rise* in the
error rate, ERT counted in joined labels). Its reference is the error stream of
the model's first ``reference_size`` joined labels (the reference *window* has
no labels, so that is the only labelled reference there is). Calibration
(~1–4 s, once per reference size and count of errors; cached under
``<state_dir>/cache/online``) runs on a thread; errors wait for it in a bounded
buffer. Alert on it with ``signal: performance.drift`` and ``where: {detector:
fet_online}``.

**Surviving a restart, on any host.** Each input partition's label-join state — for
every model fed from it: pending predictions (event id, event time, predicted label,
probabilities, value), labels waiting for their prediction, recently finished ids, the
join's counters, the rows joined but not yet reported and the window results not yet
confirmed written, the error-stream detector (reference, run), CBPE's calibration rows,
and the input offsets the state covers — is checkpointed to a compacted Kafka topic
(:mod:`streams.worker.label_changelog`: ``<consumer_group>-<topic_labels>-join-changelog``, chunked, one generation per
checkpoint, columnar NPZ, no pickle) every ``snapshot_every`` seconds when it changed, by
:meth:`LabelHook.snapshot_if_due` (a 1 s timer of the worker), at a rebalance
(:meth:`LabelHook.revoke`) and at shutdown (:meth:`LabelHook.close`).

Offsets follow the checkpoint: a message fed to the join stays un-acked (its offset is
not committed) until a checkpoint holding what it brought is acknowledged by the broker
(:meth:`take_fed` / :meth:`hold_until_snapshot`). A worker that gets a partition —
after a restart, a crash, or a rebalance, with or without the previous owner's
``state_dir`` — restores the partition's newest complete checkpoint before feeding any of
its messages (:meth:`restore_partitions`), and Faust re-reads from the committed offsets:
rows the checkpoint already holds (offset at or below the one it covers) are skipped,
the rest are joined. A crash at any moment therefore loses nothing and counts nothing
twice; it costs at most ``snapshot_every`` seconds of re-reading.

Memory: a join holds every prediction until its label comes or it expires
(up to ``labels.max_pending`` per model, ~200 bytes each). So a model whose
config has no ``labels:`` section holds, before its first label, only a
classifier's first ``performance.calibration_rows`` predictions with
probabilities (CBPE's calibration rows: the reference period's, as NannyML
calibrates); it joins everything from its first label on (labels for other
predictions made before that count as unmatched). A model with an explicit
``labels:`` section joins from its first prediction.

Limits (documented in docs/worker.md): labels carry no model version, so with
several versions live at once the joined rows are reported on the version whose
window closes next.
"""

from __future__ import annotations

import asyncio
import bisect
import copy
import dataclasses
import io
import json
import logging
import math
import threading
import time
import zlib
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from detectors.frame import Frame
from detectors.records import PERFORMANCE, T_DETECTOR, T_METRIC, T_MODEL, T_VERSION, Record
from streams.alerts.partitions import AlertPartitions
from streams.worker.decode import LabelPart, StreamKey
from streams.worker.monitors import MonitorsConfig
from streams.worker.references import json_column, object_column

if TYPE_CHECKING:  # the detectors load when a model first has labels (scipy, scikit-learn)
    from detectors.concept import ErrorStreamMonitor, LabelJoin
    from detectors.performance import Calibration, CalibrationCollector

log = logging.getLogger(__name__)

SNAPSHOT_SECONDS = 5.0
"""Default interval of the label-join checkpoints (what a crash costs in re-reading, at most)."""
LOOP_STALL_WARN_S = 0.25
"""A checkpoint's copy (on the event loop) longer than this is logged as a WARNING."""
KEEP_WINDOWS = 1000
"""Windows per model whose label-derived results are kept (a label for an older window's prediction is dropped)."""
ERROR_STREAM_METRIC = "error_stream"
FET_DETECTOR = "fet_online"
_FORMAT = 2
_FORMATS = (1, 2)  # 1: before the results per window (its accumulator is ignored)
_PARTITION_FORMAT = 1
SHARD_ROWS = "shard-rows"
"""The merge owner's record of the shards' row batches it has (``_offsets`` key ``(SHARD_ROWS, shard partition)``)."""
SHARD_TAG = "@shard"


def shard_join_id(model_id: str, partition: int) -> str:
    """The label join's own key of one shard (input ``partition``) of a sharded model: a worker holding several
    shards of a model keeps one join per shard, each checkpointed with its partition.

    >>> shard_join_id("fraud", 3)
    'fraud@shard3'
    """
    return f"{model_id}{SHARD_TAG}{int(partition)}"


class DaemonExecutor:
    """Runs submitted calls one after another on a daemon thread; ``submit`` returns a Future.

    Why not a ``ThreadPoolExecutor``: Python joins every pool thread at exit, even after
    ``shutdown(wait=False)``, so a worker stopped (SIGTERM) while the error-stream detector
    calibrates — a simulation of many seconds — sat 20 s and more after "Closing event loop".
    A calibration cut short is only redone (it is cached once complete).

    >>> ex = DaemonExecutor("demo")
    >>> ex.submit(sum, [1, 2]).result(5)
    3
    >>> ex.shutdown()
    """

    def __init__(self, name: str) -> None:
        import queue

        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._closed = False
        threading.Thread(target=self._run, name=name, daemon=True).start()

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            fut, fn, args, kwargs = job
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn(*args, **kwargs))
            except BaseException as e:  # handed to whoever waits on the future
                fut.set_exception(e)

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future:
        if self._closed:
            raise RuntimeError("cannot submit after shutdown")
        fut: Future = Future()
        self._jobs.put((fut, fn, args, kwargs))
        return fut

    def shutdown(self, wait: bool = False, *, cancel_futures: bool = False) -> None:  # as the pool's
        """No new calls; the thread ends after the current one (or with the process: it never holds up exit)."""
        import queue

        self._closed = True
        if cancel_futures:
            while True:
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if job is not None:
                    job[0].cancel()
        self._jobs.put(None)


def online_cache_dir(state_dir: Path | str) -> Path:
    """``<state_dir>/cache/online``: calibrated thresholds of the online detectors (one ``.npz`` each)."""
    return Path(state_dir) / "cache" / "online"


# ----------------------------------------------------------------------------- results per window


@dataclass
class WindowResult:
    """Label-derived results of one window of predictions, rewritten as its labels arrive.

    ``acc``: realized performance of the window's predictions joined so far;
    ``errors``: the error-stream detector's fields over their errors (merged across
    feeds, :func:`merge_error_fields`). ``changed`` counts changes; ``submitted`` /
    ``written`` the change count last handed to / confirmed by InfluxDB: the window is
    written again until ``written == changed`` (nothing is lost while InfluxDB is down,
    nor by a crash: these counters are in the snapshot).
    """

    version: str
    time_ns: int
    end_time: float
    acc: Any = None  # detectors.performance.PerformanceAccumulator
    errors: dict[str, Any] | None = None
    changed: int = 0
    submitted: int = 0
    written: int = 0
    # (changed, written, item, arrays) of the last capture (ModelResults.capture): reused while neither changed
    _captured: tuple[int, int, dict[str, Any], dict[str, np.ndarray]] | None = field(
        default=None, repr=False, compare=False
    )

    def capture(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """``(item, arrays)``: this window's result as stored in a checkpoint (JSON-able item, accumulator
        arrays), copied now — or the copies of the last call if nothing changed since (the item and arrays
        are never modified afterwards, so a thread may serialise them while the results go on)."""
        got = self._captured
        if got is not None and got[0] == self.changed and got[1] == self.written:
            return got[2], got[3]
        item: dict[str, Any] = {
            "version": self.version,
            "time_ns": self.time_ns,
            "end_time": self.end_time,
            "errors": dict(self.errors) if self.errors is not None else None,
            "changed": self.changed,
            "written": self.written,
            "acc": None,
        }
        arrays: dict[str, np.ndarray] = {}
        if self.acc is not None:
            scalars, acc_arrays = self.acc.state()
            item["acc"] = {**scalars, "classes": list(scalars["classes"])}
            arrays = {k: np.array(v, copy=True) for k, v in acc_arrays.items()}
        self._captured = (self.changed, self.written, item, arrays)
        return item, arrays


@dataclass(frozen=True)
class ResultsCapture:
    """A model's :class:`ModelResults` as a checkpoint takes it on the event loop (:meth:`ModelResults.capture`):
    copies of its small lists, each window's captured result, and the waiting joined rows (immutable)."""

    ends: list[float]
    keys: list[tuple[str, int]]
    items: list[tuple[dict[str, Any], dict[str, np.ndarray]]]
    calibrating: tuple[str, int] | None
    floor: float
    dropped: int
    waiting: list[Any]
    outbox: Any = None
    outbox_seq: int = -1
    next_seq: int = 0
    outbox_stats: dict[str, int] | None = None
    shard_stats: dict[int, dict[str, int]] = field(default_factory=dict)


_SUM = ("n", "n_detections", "n_dropped")
_TIMING = ("n_buffered",)  # how many errors waited in the monitor's buffer depends on the timing: not written
_MAX = ("drift", "statistic")


def merge_error_fields(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """The error-stream fields of one window fed in several pieces (counts add up, the first detection stays).

    >>> merge_error_fields({"n": 10, "error_rate": 0.1, "drift": 0}, {"n": 30, "error_rate": 0.5, "drift": 1})
    {'n': 40, 'error_rate': 0.4, 'drift': 1}
    """
    new = {k: v for k, v in new.items() if k not in _TIMING}
    if old is None:
        return new
    out = {**old, **{k: v for k, v in new.items() if k not in _SUM + _MAX + ("error_rate",)}}
    for k in _SUM:
        if k in old or k in new:
            out[k] = old.get(k, 0) + new.get(k, 0)
    for k in _MAX:
        if k in old or k in new:
            out[k] = max(old.get(k, -math.inf), new.get(k, -math.inf))
    n_old, n_new = old.get("n", 0), new.get("n", 0)
    if n_old + n_new:
        out["error_rate"] = (old.get("error_rate", 0.0) * n_old + new.get("error_rate", 0.0) * n_new) / (n_old + n_new)
    if "first_detection_time" in old:  # the first detection (and the threshold it crossed) stay
        for k in ("first_detection_time", "first_detection_event_time", "threshold"):
            if k in old:
                out[k] = old[k]
    return out


class LabelResults:
    """Records of label-derived results, and what to mark written once InfluxDB confirmed them."""

    def __init__(
        self,
        records: list[Record] | None = None,
        marks: list[tuple[WindowResult, int]] | None = None,
        sent: dict[str, Any] | None = None,
    ):
        self.records = records or []
        self.marks = marks or []
        self.unsent: list[str] = []  # models whose join counters are in the records
        self._sent = sent  # LabelHook._join_sent: forgotten for those models if the write fails

    def confirm(self) -> None:
        """InfluxDB has the records: their windows are written up to the submitted change."""
        for res, gen in self.marks:
            res.written = max(res.written, gen)

    def failed(self) -> None:
        """Not written: submit these windows again at the next flush."""
        for res, gen in self.marks:
            if res.submitted == gen:
                res.submitted = res.written
        if self._sent is not None:
            for m in self.unsent:
                self._sent.pop(m, None)


@dataclass
class ModelResults:
    """One model's closed windows (by end event time) and the joined rows not yet attributed to one."""

    ends: list[float] = field(default_factory=list)  # sorted window end event times
    keys: list[tuple[str, int]] = field(default_factory=list)  # (version, time_ns) per end
    results: dict[tuple[str, int], WindowResult] = field(default_factory=dict)
    waiting: list[Any] = field(default_factory=list)  # detectors.concept.Joined, in join order
    calibrating: tuple[str, int] | None = None  # window whose errors wait in the monitor's calibration buffer
    floor: float = -math.inf  # end of the newest window no longer kept: older rows are dropped
    dropped: int = 0  # joined rows of windows no longer kept
    # a shard of a sharded model (LabelHook, "Sharded models"): its joined rows go to the merge owner in numbered
    # batches; ``outbox`` is the batch ``outbox_seq`` being published (None: none), ``next_seq`` the next number,
    # ``outbox_saved`` whether a checkpoint acknowledged by the broker holds the outbox (only then is it published)
    outbox: Any = None
    outbox_seq: int = -1
    next_seq: int = 0
    outbox_saved: bool = False
    outbox_stats: dict[str, int] | None = None  # the shard join's counters when the outbox was filled
    sent_stats: dict[str, int] | None = None  # the counters last published (not checkpointed: published again)
    # the merge owner of a sharded model: each shard's join counters (shard partition -> fields), as last published
    shard_stats: dict[int, dict[str, int]] = field(default_factory=dict)

    def add_window(self, version: str, time_ns: int, end_time: float, keep: int) -> None:
        key = (version, int(time_ns))
        if key in self.results:
            return  # replayed after a restart
        i = bisect.bisect_right(self.ends, end_time)
        self.ends.insert(i, float(end_time))
        self.keys.insert(i, key)
        self.results[key] = WindowResult(version, int(time_ns), float(end_time))
        while len(self.ends) > keep:  # the oldest windows no longer take rows (docs/worker.md)
            self.keys.pop(0)
            self.floor = max(self.floor, self.ends.pop(0))
        self.prune()

    def prune(self) -> None:
        """Forget the results of windows no longer kept once they are written."""
        live = set(self.keys)
        for k in [k for k, r in self.results.items() if k not in live and r.written >= r.changed]:
            del self.results[k]

    def capture(self) -> ResultsCapture:
        """What a checkpoint stores of these results, taken cheaply: a window whose result did not change since
        the last checkpoint is not copied again (with 1,000 windows kept, a deep copy of them all took
        100-250 ms of the event loop at every checkpoint)."""
        return ResultsCapture(
            list(self.ends),
            list(self.keys),
            [res.capture() for res in self.results.values()],
            self.calibrating,
            self.floor,
            self.dropped,
            list(self.waiting),
            self.outbox,
            self.outbox_seq,
            self.next_seq,
            self.outbox_stats,
            {k: dict(v) for k, v in self.shard_stats.items()},
        )

    def attributable(self, event_time: np.ndarray) -> tuple[np.ndarray, int]:
        """Window index of each row (-1: before the kept windows), and how many leading rows have a
        closed window (the rest wait: rows are attributed in join order, see LabelHook)."""
        idx = np.searchsorted(np.asarray(self.ends), event_time, side="left")
        beyond = np.flatnonzero(idx >= len(self.ends))
        n = int(beyond[0]) if beyond.size else int(event_time.shape[0])
        idx = np.where(event_time <= self.floor, -1, idx)
        return idx[:n], n


# ----------------------------------------------------------------------------- encoding


def _encode_results(
    results: ModelResults | ResultsCapture | None, meta: dict[str, Any], arrays: dict[str, np.ndarray]
) -> None:
    """A model's window results and waiting joined rows into ``meta`` / ``arrays`` (see :func:`encode_state`)."""
    if results is None:
        return
    mr = results.capture() if isinstance(results, ModelResults) else results
    items = []
    for i, (item, acc_arrays) in enumerate(mr.items):
        items.append(item)
        arrays.update({f"res{i}.{k}": v for k, v in acc_arrays.items()})
    meta["results"] = {
        "ends": mr.ends,
        "keys": [list(k) for k in mr.keys],
        "items": items,
        "calibrating": list(mr.calibrating) if mr.calibrating else None,
        "floor": mr.floor if math.isfinite(mr.floor) else None,
        "dropped": mr.dropped,
        "outbox_seq": mr.outbox_seq,
        "next_seq": mr.next_seq,
        "outbox_stats": mr.outbox_stats,
        "shard_stats": [[p, st] for p, st in sorted(mr.shard_stats.items())],
    }
    if mr.waiting:
        from detectors.concept import Joined

        meta["waiting_classes"] = joined_arrays(Joined.concat(mr.waiting), "w.", arrays)
    if mr.outbox is not None:
        meta["outbox_classes"] = joined_arrays(mr.outbox, "o.", arrays)


_OBJECT_COLUMNS = ("event_id", "label", "pred_label")
_FLOAT_COLUMNS = ("event_time", "label_time", "pred_proba", "pred_value")


def joined_arrays(rows, prefix: str, arrays: dict[str, np.ndarray]) -> list[str]:
    """Joined rows (:class:`detectors.concept.Joined`) into ``arrays`` as plain columns named ``prefix + column``
    (object columns as JSON, no pickle); returns their classes (JSON-able)."""
    for name in _OBJECT_COLUMNS:
        col = getattr(rows, name)
        if col is not None:
            arrays[f"{prefix}{name}.json"] = json_column(col)
    for name in _FLOAT_COLUMNS:
        col = getattr(rows, name)
        if col is not None:
            arrays[f"{prefix}{name}"] = np.asarray(col, dtype=np.float64)
    return list(rows.classes)


def joined_from_arrays(data: dict[str, np.ndarray], prefix: str, classes) -> Any:
    """Inverse of :func:`joined_arrays` (a :class:`detectors.concept.Joined`)."""
    from detectors.concept import Joined

    def obj(name):
        key = f"{prefix}{name}.json"
        return object_column(data[key]) if key in data else None

    return Joined(
        obj("event_id"),
        data[f"{prefix}event_time"],
        data[f"{prefix}label_time"],
        obj("label"),
        obj("pred_label"),
        data.get(f"{prefix}pred_proba"),
        data.get(f"{prefix}pred_value"),
        tuple(str(c) for c in classes),
    )


def _decode_results(meta: dict[str, Any], data: dict[str, np.ndarray]) -> ModelResults | None:
    from detectors.performance import PerformanceAccumulator

    r = meta.get("results")
    if r is None:
        return None
    mr = ModelResults(
        ends=[float(e) for e in r["ends"]],
        keys=[(str(v), int(t)) for v, t in r["keys"]],
        calibrating=tuple(r["calibrating"]) if r["calibrating"] else None,
        floor=-math.inf if r["floor"] is None else float(r["floor"]),
        dropped=int(r["dropped"]),
        outbox_seq=int(r.get("outbox_seq", -1)),
        next_seq=int(r.get("next_seq", 0)),
        outbox_stats=r.get("outbox_stats"),
        shard_stats={int(p): dict(st) for p, st in r.get("shard_stats", [])},
    )
    for i, item in enumerate(r["items"]):
        acc = None
        if item["acc"] is not None:
            acc = PerformanceAccumulator.from_state(
                item["acc"], {k: data[f"res{i}.{k}"] for k in ("confusion", "delays")}
            )
        # submitted = written: what InfluxDB may not have is written again
        res = WindowResult(
            item["version"],
            int(item["time_ns"]),
            float(item["end_time"]),
            acc,
            item["errors"],
            int(item["changed"]),
            int(item["written"]),
            int(item["written"]),
        )
        mr.results[(res.version, res.time_ns)] = res
    if "w.event_id.json" in data:
        mr.waiting = [joined_from_arrays(data, "w.", meta.get("waiting_classes", ()))]
    if "o.event_id.json" in data:  # a checkpoint acknowledged it: it may be published (again: the merge keeps one)
        mr.outbox = joined_from_arrays(data, "o.", meta.get("outbox_classes", ()))
        mr.outbox_saved = True
    return mr


def encode_state(
    snap,
    results: ModelResults | ResultsCapture | None,
    monitor_state: dict[str, np.ndarray] | None,
    clock: float,
    offsets: dict[tuple[str, int], int] | None = None,
    calibration=None,
) -> bytes:
    """One model's state as NPZ bytes (plain arrays + a JSON header; object columns as JSON).

    ``snap``: a :class:`~detectors.concept.JoinSnapshot`, or a :class:`~detectors.concept.JoinCapture` (its
    snapshot is taken here: on the serialising thread).
    ``calibration``: CBPE's :class:`~detectors.performance.CalibrationCollector` of the model (its
    labelled rows from the join), so the calibration follows the join to another worker."""
    if hasattr(snap, "tombs"):  # a JoinCapture
        snap = snap.snapshot()
    arrays: dict[str, np.ndarray] = {}
    meta: dict[str, Any] = {
        "format": _FORMAT,
        "clock": clock,
        "classes": list(snap.classes),
        "has": snap.has,
        "stats": snap.stats.as_fields(),
        "label_clock": snap.label_clock if math.isfinite(snap.label_clock) else None,
        "offsets": [[t, p, o] for (t, p), o in sorted((offsets or {}).items())],
    }
    for prefix, cols in (("p.", snap.predictions), ("l.", snap.labels)):
        for name, col in cols.items():
            if col.dtype == object:
                arrays[f"{prefix}{name}.json"] = json_column(col)
            else:
                arrays[f"{prefix}{name}"] = col
    arrays["tomb.ids.json"] = json_column(snap.tomb_ids)
    arrays["tomb.reasons"] = snap.tomb_reasons.astype(np.int8)
    _encode_results(results, meta, arrays)
    if monitor_state is not None:
        meta["monitor"] = sorted(monitor_state)
        for k, v in monitor_state.items():
            arrays[f"mon.{k}"] = np.asarray(v)
    if calibration is not None:
        meta["calibration"], cal_arrays = calibration.state()
        for k, v in cal_arrays.items():
            if v.dtype == object:
                arrays[f"cal.{k}.json"] = json_column(v)
            else:
                arrays[f"cal.{k}"] = v
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # ids and floats compress poorly; speed matters more here
    return buf.getvalue()


def decode_state(blob: bytes) -> dict[str, Any]:
    """Inverse of :func:`encode_state`: ``snapshot`` (a JoinSnapshot), ``results``, ``monitor``, ``clock``."""
    from detectors.concept import JoinSnapshot, JoinStats

    with np.load(io.BytesIO(blob), allow_pickle=False) as z:
        data = {k: z[k] for k in z.files}
    meta = json.loads(bytes(data.pop("meta")).decode())
    if meta.get("format") not in _FORMATS:
        raise ValueError(f"unknown label-state format {meta.get('format')!r}")
    cols: dict[str, dict[str, np.ndarray]] = {"p.": {}, "l.": {}}
    for k, v in data.items():
        for prefix in cols:
            if k.startswith(prefix):
                name = k[len(prefix) :]
                if name.endswith(".json"):
                    cols[prefix][name[:-5]] = object_column(v)
                else:
                    cols[prefix][name] = v
    stats = JoinStats(**{k: v for k, v in meta["stats"].items() if k in JoinStats.__dataclass_fields__})
    snap = JoinSnapshot.from_arrays(
        cols["p."],
        cols["l."],
        object_column(data["tomb.ids.json"]),
        data["tomb.reasons"].astype(np.int64),
        tuple(meta["classes"]),
        dict(meta["has"]),
        stats,
        -math.inf if meta.get("label_clock") is None else meta["label_clock"],
    )
    monitor = {k: data[f"mon.{k}"] for k in meta["monitor"]} if "monitor" in meta else None
    offsets = {(str(t), int(p)): int(o) for t, p, o in meta.get("offsets", [])}
    calibration = None
    if "calibration" in meta:
        from detectors.performance import CalibrationCollector

        cal = {k[4:-5]: object_column(v) for k, v in data.items() if k.startswith("cal.") and k.endswith(".json")}
        cal.update({k[4:]: v for k, v in data.items() if k.startswith("cal.") and not k.endswith(".json")})
        calibration = CalibrationCollector.from_state(meta["calibration"], cal)
    return {
        "snapshot": snap,
        "results": _decode_results(meta, data),
        "monitor": monitor,
        "clock": float(meta["clock"]),
        "offsets": offsets,
        "calibration": calibration,
    }


def encode_partition(states: dict[str, bytes], saved_at: float) -> bytes:
    """The checkpoint of one input partition: its models' :func:`encode_state` bytes in one zlib-compressed
    NPZ (event ids and repeated labels compress well; level 1 keeps it fast)."""
    arrays = {f"s{i}": np.frombuffer(b, dtype=np.uint8) for i, b in enumerate(states.values())}
    arrays["meta"] = np.frombuffer(
        json.dumps({"format": _PARTITION_FORMAT, "models": list(states), "saved_at": saved_at}).encode(), dtype=np.uint8
    )
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return zlib.compress(buf.getvalue(), 1)


def decode_partition(blob: bytes) -> tuple[dict[str, bytes], float]:
    """Inverse of :func:`encode_partition`: ``({model: state bytes}, saved_at)``."""
    with np.load(io.BytesIO(zlib.decompress(blob)), allow_pickle=False) as z:
        meta = json.loads(bytes(z["meta"]).decode())
        if meta.get("format") != _PARTITION_FORMAT:
            raise ValueError(f"unknown label-checkpoint format {meta.get('format')!r}")
        return {m: bytes(z[f"s{i}"]) for i, m in enumerate(meta["models"])}, float(meta["saved_at"])


# ----------------------------------------------------------------------------- the hook


class LabelHook:
    """Label join + realized performance + error-stream detection per model (see module docstring).

    ``store``: where the join is checkpointed per input partition
    (:class:`streams.worker.label_changelog.LabelChangelog`, or any object with its async
    ``save(partition, gen, blob)`` / ``load(partition)``); without one nothing is persisted.
    ``settings`` / ``state_dir``: only for the error-stream detector's threshold cache
    (``<state_dir>/cache/online``; a cache: another host recomputes it). ``background``:
    calibrate the error-stream detector on a thread.
    """

    def __init__(
        self,
        monitors: MonitorsConfig,
        settings=None,
        *,
        store=None,
        state_dir: Path | str | None = None,
        snapshot_every: float = SNAPSHOT_SECONDS,
        cache_dir: Path | str | None = None,
        background: bool = True,
        clock=time.monotonic,
    ) -> None:
        from detectors import concept  # noqa: F401 - fail early (scikit-learn missing): the worker then runs without labels

        self.models = {m.model_id: m for m in monitors.models}
        #: models whose predictions are held from the start (their config has a ``labels:`` section)
        self.eager = {m.model_id for m in monitors.models if "labels" in m.model_fields_set}
        if state_dir is None and settings is not None:
            state_dir = settings.state_dir
        self.store = store
        self.cache_dir = (
            cache_dir if cache_dir is not None else (online_cache_dir(state_dir) if state_dir is not None else None)
        )
        self.snapshot_every = float(snapshot_every)
        self.clock = clock
        self._joins: dict[str, LabelJoin] = {}
        self._res: dict[str, ModelResults] = {}
        self._offsets: dict[str, dict[tuple[str, int], int]] = {}  # model -> (topic, partition) -> last offset fed
        self._part: dict[str, int] = {}  # model -> the input partition (number) its events come from
        self._gen: dict[int, int] = {}  # input partition -> generation of its checkpoint last restored or written
        self._restored: set[int] = set()  # input partitions whose checkpoint was looked for since they came
        self._fed: list[tuple[str, int, np.ndarray]] = []
        self._join_sent: dict[str, dict[str, int]] = {}  # model -> the join counters last written
        self._since_window: dict[str, set[tuple[str, int]]] = {}  # model -> windows the timer wrote since
        self._held: list[tuple[Any, np.ndarray]] = []  # (AckTracker, offsets) released by the next snapshot
        self.keep_windows = KEEP_WINDOWS
        self._mon: dict[str, ErrorStreamMonitor] = {}
        self._cal_rows: dict[str, CalibrationCollector] = {}  # model -> CBPE's labelled reference
        self._ref_cal: dict[str, Calibration] = {}  # model -> the Calibration of its labelled reference file
        self._now: dict[str, float] = {}
        self._dirty: set[str] = set()
        self._warned: set[str] = set()  # models seen in two partitions (warned once)
        self._shard_of: dict[str, str] = {}  # shard join key (shard_join_id) -> its sharded model
        #: publishes a shard's batch to its model's merge owner: ``(model, shard partition, seq, rows, join counters)``,
        #: returns once the broker acknowledged it (the pipeline's, through the partials topic)
        self.publish: Callable[[str, int, int, Any, dict[str, int]], Awaitable[None]] | None = None
        self._last_snapshot = clock()
        self._writing = False
        self._io = ThreadPoolExecutor(1, thread_name_prefix="label-snapshots") if self.store is not None else None
        self._calib = DaemonExecutor("error-stream-calibration") if background else None
        self.restored: dict[str, int] = {}  # model -> predictions restored (introspection, logs)
        #: checkpoints written: count, bytes (compressed), seconds (copy + encode + broker acknowledgement), the
        #: last one's bytes and milliseconds, and the longest copy (the only part on the event loop)
        self.checkpoints = {"count": 0, "bytes": 0, "seconds": 0.0, "last_bytes": 0, "last_ms": 0.0, "loop_ms_max": 0.0}

    # -- state ----------------------------------------------------------------------
    def _new_join(self, model_id: str) -> LabelJoin:
        from detectors.concept import LabelJoin

        cfg = self.models[model_id].labels
        return LabelJoin(ttl_seconds=cfg.ttl_seconds, max_pending=cfg.max_pending, align=True)

    def _owner(self, model_id: str, partition: int) -> None:
        """Remember the input partition a model's events come from (its checkpoint's key)."""
        old = self._part.setdefault(model_id, int(partition))
        if old != partition and model_id not in self._warned:
            self._warned.add(model_id)
            log.warning(
                "%s: events in partitions %d and %d: the inference and label topics are not "
                "co-partitioned (same partition count, key = model id); the label join is checkpointed "
                "with partition %d",
                model_id,
                old,
                partition,
                old,
            )

    def _route(self, model_id: str, partition: int) -> str:
        """The join key of a model's events from ``partition``: the model id, or a sharded model's shard key."""
        cfg = self.models.get(model_id)
        if cfg is None or cfg.shards <= 1 or model_id in self._shard_of:
            return model_id
        jid = shard_join_id(model_id, partition)
        if jid not in self._shard_of:
            self._register_shard(model_id, jid)
        return jid

    def _register_shard(self, model_id: str, jid: str) -> None:
        self.models[jid] = self.models[model_id]
        self._shard_of[jid] = model_id
        if model_id in self.eager:
            self.eager.add(jid)

    def _known(self, key: str) -> bool:
        """Whether a checkpoint's model key is one of this config's (a shard key of a sharded model is registered)."""
        if key in self.models:
            return True
        model_id, tag, part = key.rpartition(SHARD_TAG)
        cfg = self.models.get(model_id) if tag else None
        if cfg is None or cfg.shards <= 1 or not part.isdigit():
            return False
        self._register_shard(model_id, key)
        return True

    def _merged(self, model_id: str) -> bool:
        """A sharded model's own key: its state is the merge owner's (rows from the shards, merged windows)."""
        cfg = self.models.get(model_id)
        return cfg is not None and cfg.shards > 1 and model_id not in self._shard_of

    async def restore_partitions(self, partitions) -> int:
        """Input partitions that just came to this worker: restore the label join of their models from their
        newest complete checkpoint (before any of their messages is fed). Returns the models restored.
        A checkpoint that cannot be read (broker away) raises :class:`streams.worker.label_changelog.ChangelogError`:
        the batch fails and is read again (the worker stops rather than join without the state)."""
        todo = sorted({int(p) for p in partitions} - self._restored)
        if not todo:
            return 0
        if self.store is None:
            self._restored.update(todo)
            return 0
        n = 0
        t0 = time.perf_counter()
        loaded = await asyncio.gather(*(self.store.load(p) for p in todo))  # one round trip for all of them
        self._restored.update(todo)
        for p, got in zip(todo, loaded):
            if got is None:
                continue
            self._gen[p] = max(self._gen.get(p, 0), got.gen)
            try:
                states, saved_at = decode_partition(got.blob)
            except Exception:  # a damaged checkpoint must not stop the worker: start empty
                log.exception(
                    "the label-join checkpoint of partition %d (generation %d) is unusable; its models "
                    "start with an empty join",
                    p,
                    got.gen,
                )
                continue
            for m, blob in states.items():
                if self._known(m) and m not in self._joins:
                    n += self._restore_model(m, p, blob, saved_at, got.gen, t0)
        return n

    def _restore_model(self, model_id: str, partition: int, blob: bytes, saved_at: float, gen: int, t0: float) -> int:
        try:
            st = decode_state(blob)
            join = self._new_join(model_id)
            n = join.restore(st["snapshot"], now=st["clock"])
        except Exception:  # a damaged snapshot must not stop the worker: start empty
            log.exception("the saved label-join state of %s is unusable; starting with an empty join", model_id)
            return 0
        self._joins[model_id] = join
        self._part[model_id] = partition
        self._now[model_id] = max(self._now.get(model_id, -math.inf), st["clock"])
        if st["results"] is not None:
            self._res[model_id] = st["results"]
            if st["results"].waiting:  # a shard's rows for its merge owner: into the next checkpoint's outbox
                self._dirty.add(model_id)
        self._offsets[model_id] = dict(st["offsets"])
        if st["calibration"] is not None:
            self._cal_rows[model_id] = st["calibration"]
        if st["monitor"] is not None:
            mon = self._monitor(model_id)
            if mon is not None:
                mon.restore(st["monitor"])
        self.restored[model_id] = n
        s = join.stats
        log.info(
            "%s: label join restored from %r (%s, generation %d, saved %.0f s ago): %d predictions "
            "and %d labels waiting, %d expired on restore, CBPE calibration rows: %d; %.0f ms",
            model_id,
            self.store,
            AlertPartitions.name(partition),
            gen,
            time.time() - saved_at,
            n,
            s.pending_labels,
            s.expired - st["snapshot"].stats.expired,
            getattr(st["calibration"], "n", 0),
            1e3 * (time.perf_counter() - t0),
        )
        return 1

    def _join(self, model_id: str) -> LabelJoin:
        j = self._joins.get(model_id)
        if j is None:
            j = self._joins[model_id] = self._new_join(model_id)
        return j

    def _monitor(self, model_id: str) -> ErrorStreamMonitor | None:
        mon = self._mon.get(model_id)
        if mon is None:
            cfg = self.models[model_id]
            spec = cfg.labels.online
            if not spec.enabled:
                return None
            from detectors.concept import ErrorStreamMonitor

            mon = self._mon[model_id] = ErrorStreamMonitor.from_spec(
                spec, cfg.task, cache_dir=self.cache_dir, submit=None if self._calib is None else self._calib.submit
            )
        return mon

    def _add(self, model_id: str, rows) -> None:
        """Joined rows wait (in join order) to be attributed to their prediction's window (:meth:`_drain`)."""
        if len(rows):
            self._res_of(model_id).waiting.append(rows)

    def _res_of(self, model_id: str) -> ModelResults:
        r = self._res.get(model_id)
        if r is None:
            r = self._res[model_id] = ModelResults()
        return r

    def _drain(self, model_id: str) -> None:
        """Attribute the waiting joined rows to the closed windows of their predictions, in join order.

        Each row goes to the first closed window whose end event time is at or after its
        prediction's event time; rows after the first one whose window has not closed yet
        wait, and so do all rows while the error-stream detector calibrates on its thread:
        the detector sees the errors in join order, each window gets the same rows and the
        same verdict whatever the timing (live, a backlog, a restart).
        """
        from detectors.concept import Joined

        mr = self._res.get(model_id)
        if mr is None or not mr.ends:
            return
        mon = self._monitor(model_id)
        if mon is not None and mr.calibrating is not None:
            if not mon.ready:
                return
            key, mr.calibrating = mr.calibrating, None  # the buffered errors ran: they belong to that window
            held = mr.results.get(key)
            if held is not None:
                held.errors = merge_error_fields(held.errors, mon.window_fields())
                held.changed += 1
        if not mr.waiting:
            return
        rows = Joined.concat(mr.waiting) if len(mr.waiting) > 1 else mr.waiting[0]
        idx, n = mr.attributable(rows.event_time)
        if n == 0:
            mr.waiting = [rows]
            return
        # runs of rows of the same window, in join order
        cuts = np.flatnonzero(np.diff(idx)) + 1
        starts = np.concatenate([[0], cuts]).astype(np.int64)
        stops = np.concatenate([cuts, [n]]).astype(np.int64)
        done = 0
        for a, b in zip(starts.tolist(), stops.tolist()):
            done = b
            if idx[a] < 0:
                mr.dropped += b - a
                continue
            res = mr.results[mr.keys[int(idx[a])]]
            part = rows.take(np.arange(a, b))
            self._accumulate(model_id, res, part)
            if mon is not None:
                try:
                    mon.add(part)
                    if mon.phase == "calibrating" and not mon.ready:  # the rest of this piece is buffered
                        mr.calibrating = (res.version, res.time_ns)
                        break
                    res.errors = merge_error_fields(res.errors, mon.window_fields())
                except Exception:  # the error-stream detector must not stop the join
                    log.exception("error-stream detection failed for %s", model_id)
            res.changed += 1
        if mr.calibrating is not None and done:
            res.changed += 1
        mr.waiting = [rows.take(np.arange(done, len(rows)))] if done < len(rows) else []

    def _accumulate(self, model_id: str, res: WindowResult, rows) -> None:
        from detectors.performance import PerformanceAccumulator

        task = self.models[model_id].task
        if res.acc is None:
            res.acc = PerformanceAccumulator(task)
        if task == "regression":
            if rows.pred_value is not None:
                res.acc.add(rows.label_value, rows.pred_value, delays=rows.delay)
        elif rows.pred_label is not None:
            res.acc.add(rows.label, rows.pred_label, rows.pred_proba, rows.classes, delays=rows.delay)
            self._calibration_rows(model_id, rows, res.acc)

    def _collect(self, model_ids, window_close: bool = False) -> LabelResults:
        """Records of every window whose results changed since they were last handed to InfluxDB, and the
        join's counters if they changed. ``window_close``: also the windows the timer wrote since the model's
        last window (they go into the closing window's unit, where alert rules evaluate them)."""
        from detectors.concept import JoinStats, join_records
        from detectors.performance import performance_records

        out = LabelResults(sent=self._join_sent)
        for m in model_ids:
            mr = self._res.get(m)
            if mr is None:
                continue
            since = self._since_window.setdefault(m, set())  # written by the timer since the model's last window
            for key, res in mr.results.items():
                fresh = res.changed > res.submitted
                if not fresh and not (window_close and key in since):
                    continue
                tags = {T_MODEL: m, T_VERSION: res.version}
                if res.acc is not None and res.acc.n:
                    extra = {"n_labels": res.acc.n, **res.acc.delay_quantiles()}
                    out.records += performance_records(
                        res.acc.metrics(), tags, res.time_ns, estimated=False, n=res.acc.n, extra=extra
                    )
                if res.errors is not None:
                    fields = {
                        k: v for k, v in res.errors.items() if not (isinstance(v, float) and not math.isfinite(v))
                    }
                    out.records.append(
                        Record(
                            PERFORMANCE,
                            {**tags, T_METRIC: ERROR_STREAM_METRIC, T_DETECTOR: FET_DETECTOR},
                            fields,
                            res.time_ns,
                        )
                    )
                if fresh:
                    res.submitted = res.changed
                    out.marks.append((res, res.changed))
                    self._dirty.add(m)
                    since.add(key)
            if window_close:  # alert rules see, at each window, every label result that changed since the last
                since.clear()
            mr.prune()
            j = self._joins.get(m)
            if j is not None and mr.keys:  # the counters as they are now, on the model's newest window
                fields = self._shard_counters(mr) if self._merged(m) else j.stats.as_fields()
                if fields and fields != self._join_sent.get(m):
                    self._join_sent[m] = fields
                    version, t = max(mr.keys, key=lambda k: k[1])
                    out.records += join_records(JoinStats(**fields), {T_MODEL: m, T_VERSION: version}, t)
                    out.unsent.append(m)
        return out

    @staticmethod
    def _shard_counters(mr: ModelResults) -> dict[str, int]:
        """A sharded model's join counters: the sum of its shards' as last published (empty: none yet)."""
        out: dict[str, int] = {}
        for st in mr.shard_stats.values():
            for k, v in st.items():
                out[k] = out.get(k, 0) + int(v)
        return out

    def flush(self) -> LabelResults:
        """The timer's call (every second): attribute what joined since, and the records of the windows that
        changed — a label's result is in InfluxDB within about a second of its arrival, also when the
        stream pauses or ends (no next window needed)."""
        try:
            for m in list(self._res):
                self._drain(m)
            return self._collect(list(self._res))
        except Exception:  # label results must not stop the worker
            log.exception("label results failed")
            return LabelResults()

    # -- CBPE's calibration ------------------------------------------------------------
    def _calibration_rows(self, model_id: str, rows, acc) -> None:
        """Joined rows feed CBPE: its labelled reference (the first ones), and its estimate of these rows."""
        if rows.pred_proba is None or len(rows.classes) < 2:
            return
        from detectors.performance import CBPE, Calibration, CalibrationCollector

        cal = self.calibration(model_id)
        if isinstance(cal, Calibration) and cal.classes == tuple(rows.classes):
            acc.add_estimate(*CBPE(cal).expected_correct(rows.pred_proba, rows.classes, rows.pred_label))
        col = self._cal_rows.get(model_id)
        if col is None:
            cfg = self.models[model_id]
            col = self._cal_rows[model_id] = CalibrationCollector(
                cfg.performance.rows(cfg.reference),
                cfg.performance.min_calibration_rows,
                rolling=cfg.performance.calibration == "rolling",
            )
        col.add(rows.pred_proba, rows.classes, rows.label, rows.pred_label)

    def use_reference_calibration(self, model_id: str, calibration: Calibration | None) -> None:
        """The model's reference has labelled rows: CBPE uses their calibration (not the join's rows)."""
        if calibration is None:
            self._ref_cal.pop(model_id, None)
        else:
            self._ref_cal[model_id] = calibration

    def calibration(self, model_id: str) -> Calibration | str:
        """CBPE's calibration for the model (``detectors.performance.Calibration``), or why there is none (str):
        the labelled reference file's, else one fitted on the model's first joined labels."""
        ref = self._ref_cal.get(model_id)
        if ref is not None:
            return ref
        col = self._cal_rows.get(model_id)
        perf = self.models[model_id].performance if model_id in self.models else None
        need = perf.min_calibration_rows if perf is not None else 0
        if col is None:
            return (
                f"waiting for labels: CBPE calibrates on the first {need} joined labels with probabilities "
                f"(none yet), or on a reference file with a label column"
            )
        cal = col.calibration()
        if cal is not None:
            return cal
        if col.unstable_reason:
            return col.unstable_reason
        if col.error:
            return f"the joined labels cannot calibrate it: {col.error}"
        return f"waiting for labels: {col.n} of {need} joined labels with probabilities so far"

    # -- hooks ----------------------------------------------------------------------
    def _fresh(self, model_id: str, topic: str, partition: int, origin: np.ndarray | None) -> np.ndarray | None:
        """Mask of the rows not fed to the join before (offset above the highest one fed for this model and
        partition: rows read again after a restart or a rebalance are in the state already); remembers the
        messages fed, to hold them until a snapshot has them (:meth:`take_fed`). None: no offsets known."""
        if origin is None:
            return None
        offs = self._offsets.setdefault(model_id, {})
        last = offs.get((topic, partition), -1)
        fresh = origin > last
        if fresh.any():
            offs[(topic, partition)] = int(origin[fresh].max())
            if self.store is not None:
                self._fed.append((topic, partition, np.unique(origin[fresh])))
        return fresh

    def take_fed(self) -> list[tuple[str, int, np.ndarray]]:
        """``(topic, partition, offsets)`` of the messages fed to the join since the last call: the pipeline
        keeps them un-acked and hands them back (:meth:`hold_until_snapshot`) until a snapshot that contains
        what they brought is written — a crash then re-reads exactly what the restored state lacks."""
        fed, self._fed = self._fed, []
        return fed

    def hold_until_snapshot(self, tracker, offsets: np.ndarray) -> None:
        """Release ``offsets`` on ``tracker`` (a :class:`streams.worker.commits.AckTracker`) after the next
        checkpoint is acknowledged."""
        self._held.append((tracker, offsets))

    def _release(self, held) -> None:
        for tracker, offsets in held:
            tracker.release(offsets.tolist())

    def on_predictions(self, key: StreamKey, frame: Frame, origin: np.ndarray | None = None) -> None:
        if not len(frame):
            return
        try:
            key = key._replace(model_id=self._route(key.model_id, key.partition))
            self._owner(key.model_id, key.partition)
            room = self._room_before_label(key.model_id, frame)
            if room <= 0:
                self._now[key.model_id] = max(self._now.get(key.model_id, -math.inf), float(np.max(frame.event_time)))
                return  # no label seen yet for this model: do not hold (more of) its predictions
            fresh = self._fresh(key.model_id, key.topic, key.partition, origin)
            if fresh is not None and not fresh.all():
                if not fresh.any():
                    return
                frame = frame.take(fresh)
            if room < len(frame):
                frame = frame.take(slice(0, room))
            now = max(self._now.get(key.model_id, -math.inf), float(np.max(frame.event_time)))
            self._now[key.model_id] = now
            rows = self._join(key.model_id).add_predictions(
                frame.event_id,
                frame.event_time,
                pred_label=frame.pred_label,
                pred_proba=frame.pred_proba,
                classes=frame.classes,
                pred_value=frame.pred_value,
                now=now,
            )
            self._add(key.model_id, rows)
            self._dirty.add(key.model_id)
        except Exception:  # the label join must not stop drift monitoring
            log.exception("label join failed on predictions of %s", key.model_id)

    def _room_before_label(self, model_id: str, frame: Frame) -> int:
        """How many of ``frame``'s predictions the join may take (a large number: all of them).

        A model with a ``labels:`` section, or one whose first label has come, joins every prediction.
        Before its first label, a classifier's predictions with probabilities are held up to CBPE's
        ``performance.calibration_rows`` (``first_n``'s events by default), so CBPE calibrates on the
        labels of the reference period itself — the rows NannyML calibrates on — even when labels
        start coming one window (or a day) later; other predictions are not held (memory).
        A labelled reference file calibrates CBPE already: nothing is held for it either."""
        join = self._joins.get(model_id)
        if model_id in self.eager or (join is not None and (join.stats.labels or join.stats.replayed_labels)):
            return len(frame)
        cfg = self.models.get(model_id)
        if (
            cfg is None
            or cfg.task != "classification"
            or frame.pred_proba is None
            or len(frame.classes) < 2
            or self._shard_of.get(model_id, model_id) in self._ref_cal
        ):
            return 0
        held = join.stats.predictions if join is not None else 0
        return cfg.performance.rows(cfg.reference) - held

    def on_labels(self, part: LabelPart) -> None:
        if part.model_id not in self.models or not len(part):
            return
        try:
            part = dataclasses.replace(part, model_id=self._route(part.model_id, part.partition))
            self._owner(part.model_id, part.partition)
            fresh = self._fresh(part.model_id, part.topic, part.partition, part.origin)
            ids, labels, times = part.event_id, part.label, part.label_time
            if fresh is not None and not fresh.all():
                if not fresh.any():
                    return
                ids, labels, times = ids[fresh], labels[fresh], times[fresh]
            now = self._now.get(part.model_id)
            rows = self._join(part.model_id).add_labels(ids, labels, times, now=None if now is None else now)
            self._add(part.model_id, rows)
            self._dirty.add(part.model_id)
        except Exception:
            log.exception("label join failed on labels of %s", part.model_id)

    # -- sharded models: the merge owner's side --------------------------------------
    def merge_model(self, model_id: str, slot: int) -> None:
        """This worker merges sharded ``model_id`` in ``slot`` (its partials partition's merge slot,
        :func:`streams.alerts.partitions.merge_slot`): the model's label results live there, checkpointed
        under the slot's own key, and follow the partials partition."""
        self._owner(model_id, slot)
        self._join(model_id)  # empty (the shards join): the unit a checkpoint holds

    def on_shard_rows(
        self, model_id: str, slot: int, shard: int, seq: int, rows, stats: dict[str, int] | None = None
    ) -> bool:
        """Batch ``seq`` of the rows joined by shard ``shard`` (its input partition) of sharded ``model_id``,
        read from the partials topic by its merge owner: they wait (in the order the merge owner reads the
        batches) to be attributed to the merged windows of their predictions, as an unsharded model's joined
        rows do; ``stats``: the shard join's counters (summed over the shards into the model's ``label_join``
        point). A batch this state already holds (published again after the shard's worker crashed or moved)
        is dropped: returns False."""
        try:
            self.merge_model(model_id, slot)
            offs = self._offsets.setdefault(model_id, {})
            last = offs.get((SHARD_ROWS, int(shard)), -1)
            if seq <= last:
                return False
            if seq != last + 1 and last >= 0:
                log.warning("%s: joined-row batch #%d of shard %d follows #%d", model_id, seq, shard, last)
            offs[(SHARD_ROWS, int(shard))] = int(seq)
            if stats:
                self._res_of(model_id).shard_stats[int(shard)] = {k: int(v) for k, v in stats.items()}
            self._add(model_id, rows)
            self._dirty.add(model_id)
            return True
        except Exception:
            log.exception("label rows of %s from shard %d failed", model_id, shard)
            return False

    # -- sharded models: a shard's side -----------------------------------------------
    def _fill_outboxes(self) -> None:
        """A shard's joined rows (waiting: a shard has no windows) become its next numbered batch, which the
        checkpoint about to be taken holds: a batch is published only once a checkpoint has it, so a worker
        that restores the shard publishes the same rows under the same number (the merge owner keeps one)."""
        for jid in self._shard_of:
            mr = self._res.get(jid)
            join = self._joins.get(jid)
            if mr is None or join is None or mr.outbox is not None or jid not in self._dirty:
                continue
            stats = join.stats.as_fields()
            if not mr.waiting and stats == mr.sent_stats:
                continue
            from detectors.concept import Joined

            mr.outbox, mr.waiting = Joined.concat(mr.waiting), []  # no rows: the counters alone
            mr.outbox_seq, mr.next_seq = mr.next_seq, mr.next_seq + 1
            mr.outbox_saved, mr.outbox_stats = False, stats

    async def _publish_outboxes(self) -> None:
        """Publish the shards' checkpointed batches to their merge owners (retried at the next tick on failure)."""
        if self.publish is None:
            return
        for jid, model_id in list(self._shard_of.items()):
            mr = self._res.get(jid)
            if mr is None or mr.outbox is None or not mr.outbox_saved:
                continue
            try:
                await self.publish(model_id, self._part[jid], mr.outbox_seq, mr.outbox, mr.outbox_stats or {})
            except Exception as e:  # broker away: the batch stays in the outbox (and in the checkpoint)
                log.warning("publishing joined-row batch #%d of %s failed (%r); retrying", mr.outbox_seq, jid, e)
                continue
            if self._res.get(jid) is mr:  # not revoked meanwhile
                mr.outbox, mr.outbox_saved, mr.sent_stats = None, False, mr.outbox_stats
                self._dirty.add(jid)

    def last_window_ns(self, key: StreamKey) -> int | None:
        """Point time of the newest window of ``key``'s model and version the restored label results know
        (-1: none); None for a model that joins no labels (nothing to catch up on)."""
        self._owner(key.model_id, key.partition)
        if key.model_id not in self._joins and key.model_id not in self.eager:
            return None
        mr = self._res.get(key.model_id)
        return max((t for v, t in mr.keys if v == key.model_version), default=-1) if mr is not None else -1

    def add_window(self, key: StreamKey, time_ns: int, end_time: float) -> None:
        """A window written before a restart that the restored state does not know (see Pipeline._new_state)."""
        self._owner(key.model_id, key.partition)
        self._res_of(key.model_id).add_window(key.model_version, time_ns, end_time, self.keep_windows)
        self._dirty.add(key.model_id)

    def on_window(self, key: StreamKey, window) -> LabelResults:
        """A window of the model closed: its predictions' joined rows are attributed to it (now and as their
        labels arrive, :meth:`flush`); returns the records of the model's windows whose label-derived results
        changed, and the join's counters at the window's time."""
        out = LabelResults()
        try:
            self._owner(key.model_id, key.partition)
            mr = self._res_of(key.model_id)  # also before the first label: its predictions may be labelled later
            mr.add_window(key.model_version, window.time_ns, window.end_time, self.keep_windows)
            self._dirty.add(key.model_id)
            self._drain(key.model_id)
            self._join_sent.pop(key.model_id, None)  # every window gets the counters (at its time: the newest)
            out = self._collect([key.model_id], window_close=True)
        except Exception:
            log.exception("performance records failed for %s", key.model_id)
        return out

    # -- persistence ----------------------------------------------------------------
    def _capture(self) -> list[tuple[int, list[tuple]]]:
        """Copies of the state of every input partition with a changed model (on the caller's thread, the
        event loop: only plain array copies and the window results that changed since the last checkpoint;
        selected, sorted and serialised on a thread): ``[(partition, [(model, join capture, results capture,
        monitor, clock, offsets, calibration), ...]), ...]``. A checkpoint holds all the partition's models
        (it replaces the last)."""
        parts = sorted({self._part[m] for m in self._dirty if m in self._part})
        self._dirty.clear()
        out = []
        for p in parts:
            items = []
            for m in sorted(m for m, q in self._part.items() if q == p and m in self._joins):
                mr = self._res.get(m)
                mon = self._mon.get(m)
                cal = self._cal_rows.get(m)
                items.append(
                    (
                        m,
                        self._joins[m].capture(),
                        mr.capture() if mr is not None else None,
                        mon.state() if mon is not None else None,
                        self._now.get(m, -math.inf),
                        dict(self._offsets.get(m, {})),
                        copy.deepcopy(cal) if cal is not None else None,
                    )
                )
            if items:
                out.append((p, items))
        return out

    @staticmethod
    def _encode(parts: list[tuple[int, list[tuple]]]) -> list[tuple[int, bytes]]:
        now = time.time()
        return [(p, encode_partition({m: encode_state(*rest) for m, *rest in items}, now)) for p, items in parts]

    async def snapshot_if_due(self, force: bool = False) -> int:
        """Checkpoint the partitions whose models changed, if ``snapshot_every`` has passed: the copies are
        taken here, the encoding runs on a thread, then each partition's checkpoint goes to the store; the
        messages whose rows it holds are released (their offsets may be committed) once the broker
        acknowledged it. Returns the bytes written."""
        if self._writing:
            return 0
        if self._shard_of:
            self._writing = True
            try:
                await self._publish_outboxes()  # restored ones, and any whose publishing failed
                if self.store is None:  # nothing persisted: published as they come
                    self._fill_outboxes()
                    for jid in self._shard_of:
                        if jid in self._res and self._res[jid].outbox is not None:
                            self._res[jid].outbox_saved = True
                    await self._publish_outboxes()
            finally:
                self._writing = False
        if self.store is None or not self._dirty:
            return 0
        if not force and self.clock() - self._last_snapshot < self.snapshot_every:
            return 0
        t0 = time.perf_counter()
        held, self._held = self._held, []  # messages whose rows this checkpoint contains
        self._fill_outboxes()
        parts = self._capture()
        t1 = time.perf_counter()
        self._last_snapshot = self.clock()
        if not parts:
            self._release(held)
            return 0
        self._writing = True
        n = 0
        try:
            blobs = await asyncio.get_running_loop().run_in_executor(self._io, self._encode, parts)
            t2 = time.perf_counter()
            for p, blob in blobs:
                gen = self._gen.get(p, 0) + 1
                n += await self.store.save(p, gen, blob)
                self._gen[p] = gen
        except Exception:  # broker away...: held messages stay un-acked, try again at the next tick
            log.exception("writing the label-join checkpoint to %r failed; retrying", self.store)
            self._dirty.update(m for _, items in parts for m, *_ in items)
            self._held = held + self._held
            return 0
        finally:
            self._writing = False
        self._release(held)
        if self._shard_of:  # the shards' batches this checkpoint holds may go to their merge owners now
            for _, items in parts:
                for m, *_ in items:
                    mr = self._res.get(m)
                    if m in self._shard_of and mr is not None and mr.outbox is not None:
                        mr.outbox_saved = True
            self._writing = True
            try:
                await self._publish_outboxes()
            finally:
                self._writing = False
        t3 = time.perf_counter()
        c = self.checkpoints
        c["count"] += 1
        c["bytes"] += n
        c["seconds"] += t3 - t0
        c["last_bytes"], c["last_ms"] = n, 1e3 * (t3 - t0)
        c["loop_ms_max"] = max(c["loop_ms_max"], 1e3 * (t1 - t0))  # the part on the event loop (the copies)
        # worth a WARNING only when it costs something: a copy that stalled the event loop, or a checkpoint slower
        # than its interval (a crash then re-reads more); encoding and writing run beside the batches (a busy
        # 2-core host took 2 s to encode 250 kB on the thread, with nothing wrong)
        slow = t1 - t0 > LOOP_STALL_WARN_S or t3 - t0 > self.snapshot_every
        log.log(
            logging.WARNING if slow else logging.DEBUG,
            "label-join checkpoint of %d partition(s): %d bytes, copy %.1f ms, encode %.1f ms, write %.1f ms",
            len(parts),
            n,
            1e3 * (t1 - t0),
            1e3 * (t2 - t1),
            1e3 * (t3 - t2),
        )
        return n

    async def revoke(self, tps) -> list[str]:
        """Partitions left this worker (a rebalance): the models fed from them are checkpointed now and
        dropped from memory. Their new owner, on any host, restores exactly this state from the changelog
        and skips what it holds; if they come back here, they are restored again from the changelog
        instead of going on from a state another worker has moved past. Returns the models dropped."""
        gone = {(str(t), int(p)) for t, p in tps}
        parts = {p for _, p in gone}
        models = sorted(m for m, p in self._part.items() if p in parts)
        while self._writing:
            await asyncio.sleep(0.02)
        if self.store is not None and models:
            try:
                self._dirty.update(m for m in models if m in self._joins)
                await self.snapshot_if_due(force=True)
            except Exception:  # the new owner then re-reads from the committed offsets
                log.exception("the label-join state of %s could not be saved at the rebalance", models)
        for m in models:
            for d in (
                self._joins,
                self._res,
                self._mon,
                self._offsets,
                self._now,
                self._join_sent,
                self._since_window,
                self._cal_rows,
                self._part,
            ):
                d.pop(m, None)
            self._dirty.discard(m)
        self._restored -= parts
        for p in parts:
            self._gen.pop(p, None)
        if models:
            log.info("label join of %s handed over (partitions %s revoked)", ", ".join(models), sorted(gone))
        return models

    async def close(self) -> None:
        """The last checkpoint (shutdown), then the threads stop."""
        if self.store is not None:
            while self._writing:
                await asyncio.sleep(0.05)
            try:
                await self.snapshot_if_due(force=True)
            finally:
                await self.store.close()
        for ex in (self._io, self._calib):
            if ex is not None:
                ex.shutdown(wait=False, cancel_futures=True)


async def read_checkpoints(store, partitions) -> dict[str, dict[str, Any]]:
    """What the newest checkpoints of ``partitions`` hold, per model: ``partition``, ``gen``, ``saved_at``,
    ``pending_predictions``, ``pending_labels``, ``offsets`` (operations, tests)."""
    out: dict[str, dict[str, Any]] = {}
    for p in partitions:
        got = await store.load(int(p))
        if got is None:
            continue
        states, saved_at = decode_partition(got.blob)
        for m, blob in states.items():
            st = decode_state(blob)
            snap = st["snapshot"]
            out[m] = {
                "partition": int(p),
                "gen": got.gen,
                "saved_at": saved_at,
                "pending_predictions": int(snap.predictions["ids"].shape[0]),
                "pending_labels": int(snap.labels["ids"].shape[0]),
                "offsets": st["offsets"],
            }
    return out
