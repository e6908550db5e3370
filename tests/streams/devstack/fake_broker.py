"""A fake broker for the demo's tests: kafka-python's KafkaProducer as far as the demo uses it, and a run
against it with what it published decoded (tests/streams/devstack/test_demo.py, test_attacks.py)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from streams.devstack.demo import DemoOptions, run_demo
from streams.settings import Settings
from streams.wire.schemas import InferenceBatch, LabelBatch

SETTINGS = Settings(kafka_bootstrap="127.0.0.1:1", topic_inferences="t.inf", topic_labels="t.lab")


class FakeFuture:
    is_done = True

    def add_callback(self, f, *args):
        f(*args, None)
        return self

    def add_errback(self, f, *args):
        return self

    def get(self, timeout=None):
        return None


class FakeClient:
    """kafka-python's KafkaProducer as far as the demo uses it: records every message."""

    instances: ClassVar[list[FakeClient]] = []

    def __init__(self, **config: Any) -> None:
        self.config = config
        self.sent: list[tuple[str, bytes | None, bytes]] = []
        FakeClient.instances.append(self)

    def send(self, topic, value=None, key=None):
        self.sent.append((topic, key, value))
        return FakeFuture()

    def flush(self, timeout=None):
        pass

    def close(self, timeout=None):
        pass


class Run:
    """A demo run against the fake broker, its summary and what it published, decoded."""

    def __init__(self, **kw: Any) -> None:
        kw.setdefault("seed", 1)
        kw.setdefault("pace", False)
        kw.setdefault("progress_every", 0)
        FakeClient.instances.clear()
        self.summary = run_demo(SETTINGS, DemoOptions(**kw), client_factory=FakeClient)
        sdk = [c for c in FakeClient.instances if c.config["client_id"] == "driftwatch-demo"]
        raw = [c for c in FakeClient.instances if c.config["client_id"] == "driftwatch-demo-raw"]
        self.sdk_messages = [m for c in sdk for m in c.sent]
        self.raw_messages = [m for c in raw for m in c.sent]
        self.events: dict[str, list[dict[str, Any]]] = {}
        self.labels: dict[str, list[dict[str, Any]]] = {}
        for topic, key, value in self.sdk_messages:
            if topic == SETTINGS.topic_inferences:
                b = InferenceBatch.model_validate_json(value)
                assert key == b.model_id.encode()
                for j, eid in enumerate(b.event_id):
                    self.events.setdefault(b.model_id, []).append(
                        {
                            "event_id": eid,
                            "event_time": b.event_time[j],
                            "source_id": b.source_id[j] if b.source_id else None,
                            "features": {k: v[j] for k, v in b.features.items()},
                            "label": b.prediction.label[j] if b.prediction.label else None,
                            "value": b.prediction.value[j] if b.prediction.value else None,
                            "proba": {c: v[j] for c, v in (b.prediction.probabilities or {}).items()},
                        }
                    )
            else:
                assert topic == SETTINGS.topic_labels
                b = LabelBatch.model_validate_json(value)
                for j, eid in enumerate(b.event_id):
                    self.labels.setdefault(b.model_id, []).append(
                        {"event_id": eid, "label": b.label[j], "label_time": b.label_time[j]}
                    )
        for evs in self.events.values():
            evs.sort(key=lambda e: e["event_id"])

    def column(self, model: str, feature: str) -> list[Any]:
        return [e["features"][feature] for e in self.events[model]]

    def numeric(self, model: str, feature: str) -> np.ndarray:
        return np.array([np.nan if v is None or isinstance(v, str) else v for v in self.column(model, feature)], float)
