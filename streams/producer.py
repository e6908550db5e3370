"""The producer SDK's public import path: ``from streams.producer import DriftwatchProducer``.

The code lives in :mod:`streams.wire.producer` (the wire room); this path is what serving apps
write (README, docs/producer.md), so it stays.
"""

from streams.wire.producer import (
    DriftwatchProducer,
    EncodedMessage,
    ProducerStats,
    encode_batches,
    pack_inferences,
    pack_labels,
)

__all__ = [
    "DriftwatchProducer",
    "EncodedMessage",
    "ProducerStats",
    "encode_batches",
    "pack_inferences",
    "pack_labels",
]
