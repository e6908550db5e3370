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

**Surviving a restart.** With a state dir (the worker's ``Settings.state_dir``),
each model's state — pending predictions (event id, event time, predicted label,
probabilities, value), labels waiting for their prediction, recently finished ids,
the join's counters, the rows joined but not yet reported, and the error-stream
detector (reference, run) — is written to ``<state_dir>/labels/labels.sqlite3``
(one row per model, columnar NPZ, no pickle) every ``snapshot_every`` seconds
when it changed, by :meth:`LabelHook.snapshot_if_due` (a 1 s timer of the
worker) and at shutdown (:meth:`LabelHook.close`). A restarted worker restores a
model's state when it first sees the model, expiring what outlived its TTL.
Predictions and labels read again from Kafka after the restart (their offsets
were not yet committed) that the restored state already held are counted as
``replayed_predictions`` / ``replayed_labels``, not twice.

What a crash can lose: after SIGKILL, what changed since the last snapshot
(at most ``snapshot_every`` seconds, 5 by default): labels consumed in that
interval (their offsets are committed within about a second) and predictions
of windows written in that interval are not in the restored state, so those
labels' predictions never join (counted as expired). Predictions not yet in a
written window are read again from Kafka, so they are never lost. After
SIGTERM, nothing (the shutdown writes a last snapshot).

Several workers: the file belongs to a state dir. A worker restores only what
a worker with the same state dir saved; when a model's partition moves to a worker
with another state dir, its waiting predictions are lost there (their labels
count as unmatched), as for alert state (docs/scale-out.md).

Memory: a join holds every prediction until its label comes or it expires
(up to ``labels.max_pending`` per model, ~200 bytes each). So a model whose
config has no ``labels:`` section starts joining only when its first label
arrives (labels for predictions made before that count as unmatched); a model
with an explicit ``labels:`` section joins from its first prediction.

Limits (documented in docs/worker.md): labels carry no model version, so with
several versions live at once the joined rows are reported on the version whose
window closes next.
"""

from __future__ import annotations

import asyncio
import copy
import importlib
import io
import json
import logging
import math
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from detectors.frame import Frame
from detectors.records import PERFORMANCE, T_DETECTOR, T_METRIC, T_MODEL, T_VERSION, Record
from streams.decode import LabelPart, StreamKey
from streams.monitors import MonitorsConfig
from streams.references import json_column, object_column

log = logging.getLogger(__name__)

SNAPSHOT_SECONDS = 5.0
"""Default interval of the label-join snapshots (what a SIGKILL can lose at most)."""
ERROR_STREAM_METRIC = "error_stream"
FET_DETECTOR = "fet_online"
_FORMAT = 1


def labels_path(state_dir: Path | str) -> Path:
    """``<state_dir>/labels/labels.sqlite3``: the label-join snapshots."""
    return Path(state_dir) / "labels" / "labels.sqlite3"


def online_cache_dir(state_dir: Path | str) -> Path:
    """``<state_dir>/cache/online``: calibrated thresholds of the online detectors (one ``.npz`` each)."""
    return Path(state_dir) / "cache" / "online"


# ----------------------------------------------------------------------------- encoding


def encode_state(snap, acc, monitor_state: dict[str, np.ndarray] | None, clock: float) -> bytes:
    """One model's state as NPZ bytes (plain arrays + a JSON header; object columns as JSON)."""
    arrays: dict[str, np.ndarray] = {}
    meta: dict[str, Any] = {"format": _FORMAT, "clock": clock, "classes": list(snap.classes), "has": snap.has,
                            "stats": snap.stats.as_fields(),
                            "label_clock": snap.label_clock if math.isfinite(snap.label_clock) else None}
    for prefix, cols in (("p.", snap.predictions), ("l.", snap.labels)):
        for name, col in cols.items():
            if col.dtype == object:
                arrays[f"{prefix}{name}.json"] = json_column(col)
            else:
                arrays[f"{prefix}{name}"] = col
    arrays["tomb.ids.json"] = json_column(snap.tomb_ids)
    arrays["tomb.reasons"] = snap.tomb_reasons.astype(np.int8)
    if acc is not None:
        meta["acc"], acc_arrays = acc.state()
        arrays.update({f"acc.{k}": v for k, v in acc_arrays.items()})
    if monitor_state is not None:
        meta["monitor"] = sorted(monitor_state)
        for k, v in monitor_state.items():
            arrays[f"mon.{k}"] = np.asarray(v)
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # ids and floats compress poorly; speed matters more here
    return buf.getvalue()


def decode_state(blob: bytes) -> dict[str, Any]:
    """Inverse of :func:`encode_state`: ``snapshot`` (a JoinSnapshot), ``acc``, ``monitor``, ``clock``."""
    from detectors.concept import JoinSnapshot, JoinStats
    from detectors.performance import PerformanceAccumulator

    with np.load(io.BytesIO(blob), allow_pickle=False) as z:
        data = {k: z[k] for k in z.files}
    meta = json.loads(bytes(data.pop("meta")).decode())
    if meta.get("format") != _FORMAT:
        raise ValueError(f"unknown label-state format {meta.get('format')!r}")
    cols: dict[str, dict[str, np.ndarray]] = {"p.": {}, "l.": {}}
    for k, v in data.items():
        for prefix in cols:
            if k.startswith(prefix):
                name = k[len(prefix):]
                if name.endswith(".json"):
                    cols[prefix][name[:-5]] = object_column(v)
                else:
                    cols[prefix][name] = v
    stats = JoinStats(**{k: v for k, v in meta["stats"].items() if k in JoinStats.__dataclass_fields__})
    snap = JoinSnapshot.from_arrays(cols["p."], cols["l."], object_column(data["tomb.ids.json"]),
                                    data["tomb.reasons"].astype(np.int64), tuple(meta["classes"]), dict(meta["has"]),
                                    stats, -math.inf if meta.get("label_clock") is None else meta["label_clock"])
    acc = None
    if "acc" in meta:
        acc = PerformanceAccumulator.from_state(meta["acc"], {k: data[f"acc.{k}"] for k in ("confusion", "delays")})
    monitor = {k: data[f"mon.{k}"] for k in meta["monitor"]} if "monitor" in meta else None
    return {"snapshot": snap, "acc": acc, "monitor": monitor, "clock": float(meta["clock"])}


class LabelStore:
    """The SQLite file of label-join snapshots: one row per model (see module docstring)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")  # a reader never sees a half-written snapshot
            conn.execute("CREATE TABLE IF NOT EXISTS label_state (model TEXT PRIMARY KEY, saved_at REAL NOT NULL,"
                         " clock REAL NOT NULL, pending INTEGER NOT NULL, state BLOB NOT NULL)")
            self._conn = conn
        return self._conn

    def save(self, rows: list[tuple[str, float, int, bytes]]) -> None:
        """Replace the saved state of these models in one transaction: ``(model, clock, pending, blob)``."""
        with self._lock:
            db = self._db()
            now = time.time()
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany("INSERT OR REPLACE INTO label_state (model, saved_at, clock, pending, state)"
                               " VALUES (?, ?, ?, ?, ?)", [(m, now, c, p, b) for m, c, p, b in rows])
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def load(self, model: str) -> tuple[float, bytes] | None:
        """``(saved_at, state)`` of a model, or None."""
        with self._lock:
            row = self._db().execute("SELECT saved_at, state FROM label_state WHERE model = ?", (model,)).fetchone()
        return None if row is None else (float(row[0]), bytes(row[1]))

    def models(self) -> dict[str, tuple[float, int]]:
        """Saved models: ``model -> (saved_at, pending predictions)``."""
        with self._lock:
            rows = self._db().execute("SELECT model, saved_at, pending FROM label_state").fetchall()
        return {m: (float(t), int(p)) for m, t, p in rows}

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


# ----------------------------------------------------------------------------- the hook


class LabelHook:
    """Label join + realized performance + error-stream detection per model (see module docstring).

    ``settings``: takes ``state_dir`` from it (snapshots and the threshold cache);
    without one (or ``state_dir``) nothing is persisted and calibrations are not
    cached. ``background``: calibrate the error-stream detector on a thread.
    """

    def __init__(self, monitors: MonitorsConfig, settings=None, *, state_dir: Path | str | None = None,
                 snapshot_every: float = SNAPSHOT_SECONDS, cache_dir: Path | str | None = None,
                 background: bool = True, clock=time.monotonic) -> None:
        importlib.import_module("detectors.concept")  # fail early: the worker then runs without labels

        self.models = {m.model_id: m for m in monitors.models}
        #: models whose predictions are held from the start (their config has a ``labels:`` section)
        self.eager = {m.model_id for m in monitors.models if "labels" in m.model_fields_set}
        if state_dir is None and settings is not None:
            state_dir = settings.state_dir
        self.store = LabelStore(labels_path(state_dir)) if state_dir is not None else None
        self.cache_dir = cache_dir if cache_dir is not None else (
            online_cache_dir(state_dir) if state_dir is not None else None)
        self.snapshot_every = float(snapshot_every)
        self.clock = clock
        self._joins: dict[str, object] = {}
        self._acc: dict[str, object] = {}
        self._mon: dict[str, object] = {}
        self._cal_rows: dict[str, object] = {}  # model -> CalibrationCollector (CBPE's labelled reference)
        self._ref_cal: dict[str, object] = {}  # model -> the Calibration of its labelled reference file
        self._now: dict[str, float] = {}
        self._seen: set[str] = set()  # models whose saved state was looked for
        self._dirty: set[str] = set()
        self._last_snapshot = clock()
        self._writing = False
        self._io = ThreadPoolExecutor(1, thread_name_prefix="label-snapshots") if self.store is not None else None
        self._calib = ThreadPoolExecutor(1, thread_name_prefix="error-stream-calibration") if background else None
        self.restored: dict[str, int] = {}  # model -> predictions restored (introspection, logs)

    # -- state ----------------------------------------------------------------------
    def _new_join(self, model_id: str):
        from detectors.concept import LabelJoin

        cfg = self.models[model_id].labels
        return LabelJoin(ttl_seconds=cfg.ttl_seconds, max_pending=cfg.max_pending, align=True)

    def _ensure(self, model_id: str) -> None:
        """First sight of a model: restore its saved state, if any."""
        if model_id in self._seen:
            return
        self._seen.add(model_id)
        if self.store is None:
            return
        t0 = time.perf_counter()
        try:
            got = self.store.load(model_id)
            if got is None:
                return
            saved_at, blob = got
            st = decode_state(blob)
            join = self._new_join(model_id)
            n = join.restore(st["snapshot"], now=st["clock"])
        except Exception:  # noqa: BLE001 - a damaged snapshot must not stop the worker: start empty
            log.exception("the saved label-join state of %s is unusable; starting with an empty join", model_id)
            return
        self._joins[model_id] = join
        self._now[model_id] = max(self._now.get(model_id, -math.inf), st["clock"])
        if st["acc"] is not None:
            self._acc[model_id] = st["acc"]
        if st["monitor"] is not None:
            mon = self._monitor(model_id)
            if mon is not None:
                mon.restore(st["monitor"])
        self.restored[model_id] = n
        s = join.stats
        log.info("%s: label join restored from %s (saved %.0f s ago): %d predictions and %d labels waiting, "
                 "%d expired on restore; %.0f ms", model_id, self.store.path, time.time() - saved_at, n,
                 s.pending_labels, s.expired - st["snapshot"].stats.expired, 1e3 * (time.perf_counter() - t0))

    def _join(self, model_id: str):
        j = self._joins.get(model_id)
        if j is None:
            j = self._joins[model_id] = self._new_join(model_id)
        return j

    def _monitor(self, model_id: str):
        mon = self._mon.get(model_id)
        if mon is None:
            cfg = self.models[model_id]
            spec = cfg.labels.online
            if not spec.enabled:
                return None
            from detectors.concept import ErrorStreamMonitor

            mon = self._mon[model_id] = ErrorStreamMonitor.from_spec(
                spec, cfg.task, cache_dir=self.cache_dir, submit=None if self._calib is None else self._calib.submit)
        return mon

    def _add(self, model_id: str, rows) -> None:
        if not len(rows):
            return
        from detectors.performance import PerformanceAccumulator

        task = self.models[model_id].task
        acc = self._acc.get(model_id)
        if acc is None:
            acc = self._acc[model_id] = PerformanceAccumulator(task)
        if task == "regression":
            if rows.pred_value is not None:
                acc.add(rows.label_value, rows.pred_value, delays=rows.delay)
        elif rows.pred_label is not None:
            acc.add(rows.label, rows.pred_label, rows.pred_proba, rows.classes, delays=rows.delay)
            self._calibration_rows(model_id, rows, acc)
        mon = self._monitor(model_id)
        if mon is not None:
            try:
                mon.add(rows)
            except Exception:  # noqa: BLE001 - the error-stream detector must not stop the join
                log.exception("error-stream detection failed for %s", model_id)

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
            perf = self.models[model_id].performance
            col = self._cal_rows[model_id] = CalibrationCollector(perf.calibration_rows, perf.min_calibration_rows)
        col.add(rows.pred_proba, rows.classes, rows.label, rows.pred_label)

    def use_reference_calibration(self, model_id: str, calibration) -> None:
        """The model's reference has labelled rows: CBPE uses their calibration (not the join's rows)."""
        if calibration is None:
            self._ref_cal.pop(model_id, None)
        else:
            self._ref_cal[model_id] = calibration

    def calibration(self, model_id: str):
        """CBPE's calibration for the model (``detectors.performance.Calibration``), or why there is none (str):
        the labelled reference file's, else one fitted on the model's first joined labels."""
        ref = self._ref_cal.get(model_id)
        if ref is not None:
            return ref
        col = self._cal_rows.get(model_id)
        perf = self.models[model_id].performance if model_id in self.models else None
        need = perf.min_calibration_rows if perf is not None else 0
        if col is None:
            return (f"waiting for labels: CBPE calibrates on the first {need} joined labels with probabilities "
                    f"(none yet), or on a reference file with a label column")
        cal = col.calibration()
        if cal is not None:
            return cal
        if col.error:
            return f"the joined labels cannot calibrate it: {col.error}"
        return f"waiting for labels: {col.n} of {need} joined labels with probabilities so far"

    # -- hooks ----------------------------------------------------------------------
    def on_predictions(self, key: StreamKey, frame: Frame) -> None:
        if not len(frame):
            return
        try:
            self._ensure(key.model_id)
            now = max(self._now.get(key.model_id, -math.inf), float(np.max(frame.event_time)))
            self._now[key.model_id] = now
            if key.model_id not in self._joins and key.model_id not in self.eager:
                return  # no label seen yet for this model: do not hold its predictions
            rows = self._join(key.model_id).add_predictions(
                frame.event_id, frame.event_time, pred_label=frame.pred_label, pred_proba=frame.pred_proba,
                classes=frame.classes, pred_value=frame.pred_value, now=now)
            self._add(key.model_id, rows)
            self._dirty.add(key.model_id)
        except Exception:  # noqa: BLE001 - the label join must not stop drift monitoring
            log.exception("label join failed on predictions of %s", key.model_id)

    def on_labels(self, part: LabelPart) -> None:
        if part.model_id not in self.models or not len(part):
            return
        try:
            self._ensure(part.model_id)
            now = self._now.get(part.model_id)
            rows = self._join(part.model_id).add_labels(part.event_id, part.label, part.label_time,
                                                        now=None if now is None else now)
            self._add(part.model_id, rows)
            self._dirty.add(part.model_id)
        except Exception:  # noqa: BLE001
            log.exception("label join failed on labels of %s", part.model_id)

    def on_window(self, key: StreamKey, window) -> list[Record]:
        """Realized performance of the rows joined since the model's previous window, join counters,
        and the error-stream detector's verdict."""
        out: list[Record] = []
        try:
            self._ensure(key.model_id)
            from detectors.concept import join_records
            from detectors.performance import performance_records

            tags = {T_MODEL: key.model_id, T_VERSION: key.model_version}
            acc = self._acc.pop(key.model_id, None)
            if acc is not None and acc.n:
                extra = {"n_labels": acc.n, **acc.delay_quantiles()}
                out += performance_records(acc.metrics(), tags, window.time_ns, estimated=False, n=acc.n,
                                           extra=extra)
            j = self._joins.get(key.model_id)
            if j is not None:
                out += join_records(j.stats, tags, window.time_ns)
                self._dirty.add(key.model_id)
            mon = self._mon.get(key.model_id)
            if mon is not None:
                fields = {k: v for k, v in mon.window_fields().items()
                          if not (isinstance(v, float) and not math.isfinite(v))}
                out.append(Record(PERFORMANCE, {**tags, T_METRIC: ERROR_STREAM_METRIC, T_DETECTOR: FET_DETECTOR},
                                  fields, window.time_ns))
        except Exception:  # noqa: BLE001
            log.exception("performance records failed for %s", key.model_id)
        return out

    # -- persistence ----------------------------------------------------------------
    def _capture(self) -> list[tuple[str, Any, Any, Any, float]]:
        """Copies of the dirty models' state (on the caller's thread; serialised elsewhere)."""
        items = []
        for m in sorted(self._dirty):
            j = self._joins.get(m)
            if j is None:
                continue
            acc = self._acc.get(m)
            mon = self._mon.get(m)
            items.append((m, j.snapshot(), copy.deepcopy(acc) if acc is not None else None,
                          mon.state() if mon is not None else None, self._now.get(m, -math.inf)))
        self._dirty.clear()
        return items

    def _write(self, items) -> int:
        rows = []
        for m, snap, acc, mon, clock in items:
            rows.append((m, clock, int(snap.predictions["ids"].shape[0]), encode_state(snap, acc, mon, clock)))
        if rows:
            self.store.save(rows)
        return sum(len(r[3]) for r in rows)

    def snapshot_now(self) -> int:
        """Write the changed models' state now, on this thread; returns the bytes written."""
        if self.store is None:
            return 0
        items = self._capture()
        self._last_snapshot = self.clock()
        return self._write(items) if items else 0

    async def snapshot_if_due(self, force: bool = False) -> int:
        """Write the changed models' state if ``snapshot_every`` has passed (the copies are taken here,
        the encoding and the SQLite write run on a thread). Returns the bytes written."""
        if self.store is None or not self._dirty or self._writing:
            return 0
        if not force and self.clock() - self._last_snapshot < self.snapshot_every:
            return 0
        t0 = time.perf_counter()
        items = self._capture()
        t1 = time.perf_counter()
        self._last_snapshot = self.clock()
        if not items:
            return 0
        self._writing = True
        try:
            n = await asyncio.get_running_loop().run_in_executor(self._io, self._write, items)
        except Exception:  # noqa: BLE001 - disk full, locked file...: try again at the next tick
            log.exception("writing the label-join snapshot to %s failed; retrying", self.store.path)
            self._dirty.update(m for m, *_ in items)
            return 0
        finally:
            self._writing = False
        log.debug("label-join snapshot of %d model(s): %d bytes, copy %.1f ms, write %.1f ms", len(items), n,
                  1e3 * (t1 - t0), 1e3 * (time.perf_counter() - t1))
        return n

    async def close(self) -> None:
        """The last snapshot (shutdown), then the threads stop."""
        if self.store is not None:
            while self._writing:
                await asyncio.sleep(0.05)
            try:
                await self.snapshot_if_due(force=True)
            finally:
                self.store.close()
        for ex in (self._io, self._calib):
            if ex is not None:
                ex.shutdown(wait=False, cancel_futures=True)
