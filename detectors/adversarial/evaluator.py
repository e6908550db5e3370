"""The adversarial window evaluator for :mod:`detectors.runner`.

It keeps one :class:`~detectors.adversarial.monitor.AdversarialMonitor` per
model version (at most ``max_models``, least recently used dropped): the fitted
detectors and the per-source extraction state, which must live across windows.
That state is in-process: after a worker restart or a partition moving to
another worker, extraction tracking starts afresh (sources need
``min_queries`` new queries before they are tested again).

Reference rows. The adversarial detectors need whole rows (joint
distribution, per-source distances), which :class:`~detectors.reference.Reference`
does not keep (it stores sorted columns). The evaluator takes, in order:

1. the reference's rows when the worker attached them
   (``detectors.reference.attach_reference_frame``, i.e.
   ``ctx.reference._cache["reference_frame"]``), or ``ctx.cache["reference_frame"]``;
2. otherwise, only if ``warmup_events`` is set in the spec, the first
   ``warmup_events`` events of the model version seen by this worker (the
   windows used for that get no adversarial records). By default a window
   without reference rows gets no adversarial records (as the other row-based
   evaluators in :mod:`detectors.advanced`).

The spec is ``ctx.adversarial`` when the context carries one (the model's
``adversarial:`` config), else the evaluator's default. If fitting fails (e.g.
``engine: alibi`` without PyTorch, an unreadable estimator file), the error is
raised once for that model version and its windows then get no adversarial
records.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from detectors.adversarial.monitor import AdversarialMonitor
from detectors.adversarial.spec import AdversarialSpec
from detectors.errors import DetectorFailure
from detectors.frame import Frame, concat
from detectors.records import Record
from detectors.reference import REFERENCE_FRAME_KEY

__all__ = ["AdversarialEvaluator", "AdversarialFitError", "reference_rows"]


class AdversarialFitError(DetectorFailure):
    """The adversarial detectors of a model version could not be fitted (the message says why)."""


def reference_rows(ctx: Any) -> Frame | None:
    """Reference rows offered with the window, if any (see module docstring)."""
    ref = getattr(ctx, "reference", None)
    for cache in (getattr(ctx, "cache", None), getattr(ref, "_cache", None)):
        cand = (cache or {}).get(REFERENCE_FRAME_KEY)
        if isinstance(cand, Frame):
            return cand
    for attr in ("frame", "rows"):
        cand = getattr(ref, attr, None)
        if isinstance(cand, Frame):
            return cand
    return None


@dataclass
class _State:
    spec: AdversarialSpec
    monitor: AdversarialMonitor | None = None
    warm: list[Frame] = field(default_factory=list)
    warm_n: int = 0
    failed: bool = False
    # fitted by prepare() and no window with reference rows evaluated yet: until one is, a window without
    # reference rows gets nothing, as it would have if the first such window had fitted the monitor
    prepared: bool = False


class AdversarialEvaluator:
    """``ADVERSARIAL`` per window and ``SOURCE`` per top-K source (see module docstring)."""

    name = "adversarial"
    segmented = False

    def __init__(self, spec: AdversarialSpec | None = None, max_models: int = 256) -> None:
        self.spec = spec or AdversarialSpec()
        self.max_models = int(max_models)
        self._states: OrderedDict[tuple[str, str], _State] = OrderedDict()

    def monitor(self, model_id: str, version: str) -> AdversarialMonitor | None:
        """The fitted monitor of a model version (None while warming up or unknown)."""
        st = self._states.get((model_id, version))
        return st.monitor if st else None

    def _state(self, key: tuple[str, str], spec: AdversarialSpec) -> _State:
        st = self._states.get(key)
        if st is None or st.spec != spec:  # new version, or its config changed: start again
            st = _State(spec)
            self._states[key] = st
            while len(self._states) > self.max_models:
                self._states.popitem(last=False)
        self._states.move_to_end(key)
        return st

    def evaluate(self, ctx: Any) -> list[Record]:
        spec = getattr(ctx, "adversarial", None) or self.spec
        if not spec.enabled or len(ctx.frame) == 0:
            return []
        st = self._state((ctx.model_id, ctx.version), spec)
        if st.failed:
            return []
        if st.prepared:
            if reference_rows(ctx) is None:
                return []
            st.prepared = False
        if st.monitor is None:
            ref = reference_rows(ctx)
            if ref is None:
                if spec.warmup_events is None:
                    return []
                st.warm.append(ctx.frame)
                st.warm_n += len(ctx.frame)
                if st.warm_n < spec.warmup_events:
                    return []
                ref = concat(st.warm)
                ref = ref.take(slice(0, spec.warmup_events))
                st.warm, st.warm_n = [], 0
                self._fit(st, ref, ctx)
                return []
            st.monitor = self._fit(st, ref, ctx)
        res = st.monitor.evaluate(ctx.frame)
        return st.monitor.records(res, ctx.tags(segmented=False), ctx.time_ns)

    def prepare(self, ctx: Any) -> None:
        """Fit the model version's monitor from the reference rows now, before its first window
        (:func:`detectors.runner.prepare_evaluators`): the same fit :meth:`evaluate` would do then."""
        spec = getattr(ctx, "adversarial", None) or self.spec
        if not spec.enabled:
            return
        st = self._state((ctx.model_id, ctx.version), spec)
        if st.monitor is None and not st.failed:
            ref = reference_rows(ctx)
            if ref is not None:
                self._fit(st, ref, ctx)
                st.prepared = True

    def _fit(self, st: _State, ref: Frame, ctx: Any) -> AdversarialMonitor:
        try:
            st.monitor = AdversarialMonitor.fit(ref, ctx.features, st.spec, task=ctx.task)
            return st.monitor
        except Exception as e:
            st.failed = True
            raise AdversarialFitError(
                f"adversarial detectors off for {ctx.model_id} v{ctx.version}: {type(e).__name__}: {e}"
            ) from e
