"""Hostile-input generators: malformed Kafka message values, each with the dead-letter reason it must get.

Every generator is ``gen(rng, i) -> bytes`` and is registered in :data:`KINDS`
with the reason from :data:`streams.worker.decode.REASONS` the worker must give it,
decided from the wire contract (``streams/wire/schemas.py``), not from the decoder:

=================  =======================================================  ===================
kind               what                                                     reason
=================  =======================================================  ===================
invalid_json       truncated, garbage, trailing bytes, bare words           invalid_json
wrong_types        event_id a number, features a list, time a word, ...     schema
bad_time           event_time negative or far in the future                 bad_time
nan_infinity       NaN / Infinity / -Infinity literals, 1e999               non_finite
missing_fields     no event_id / features / prediction / type ...           schema
unknown_model      a model id the monitor config does not name              unknown_model
deep_nesting       5000 nested arrays or objects                            too_deep
wrong_encoding     Latin-1, UTF-16, lone surrogates, invalid UTF-8          invalid_encoding
oversize           a valid-looking batch over ``max_message_bytes``         too_large
empty              no value / empty value / empty array                     empty
=================  =======================================================  ===================

A value of the wrong type *inside* ``features`` (a string in a numeric
feature) is not a malformed message: the event is kept and the value counted
as a type error by data quality (``docs/worker.md``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import orjson

from tests.reliability.helpers import batch_doc

MODEL = "m"


def _event(i: int, **over) -> dict:
    ev = {
        "schema_version": 1,
        "type": "inference",
        "event_id": f"bad-{i}",
        "model_id": MODEL,
        "model_version": "1",
        "event_time": 1.7e9 + i,
        "features": {"x0": 0.5, "x1": 1.0, "c0": "a"},
        "prediction": {"label": "yes"},
    }
    ev.update(over)
    return {k: v for k, v in ev.items() if v is not _DROP}


_DROP = object()


def invalid_json(rng: np.random.Generator, i: int) -> bytes:
    good = orjson.dumps(_event(i))
    choice = i % 5
    if choice == 0:
        return good[: int(rng.integers(1, len(good) - 1))]  # truncated
    if choice == 1:
        return good + b"}garbage"
    if choice == 2:
        return b"{'single': 'quotes'}"
    if choice == 3:
        return b"not json at all " + str(i).encode()
    return b'{"event_id": "x", "model_id": "m",}'  # trailing comma


def wrong_types(rng: np.random.Generator, i: int) -> bytes:
    variants = [
        {"event_id": 12345},
        {"features": [1, 2, 3]},
        {"model_id": None},
        {"prediction": "yes"},
        {"schema_version": "one"},
        {"features": {"x0": {"nested": 1}}, "type": 7},
        {"model_version": ["1"]},
        {"event_time": "yesterday at noon"},  # a string time must be ISO-8601
    ]
    return orjson.dumps(_event(i, **variants[i % len(variants)]))


def bad_time(rng: np.random.Generator, i: int) -> bytes:
    return orjson.dumps(_event(i, event_time=[-5.0, 1e15, -1e9][i % 3]))


def nan_infinity(rng: np.random.Generator, i: int) -> bytes:
    good = orjson.dumps(_event(i)).decode()
    lit = ["NaN", "Infinity", "-Infinity", "1e999"][i % 4]
    return good.replace('"x0":0.5', f'"x0":{lit}').encode()


def missing_fields(rng: np.random.Generator, i: int) -> bytes:
    field = ["event_id", "features", "prediction", "type", "model_id", "event_time"][i % 6]
    return orjson.dumps(_event(i, **{field: _DROP}))


def unknown_model(rng: np.random.Generator, i: int) -> bytes:
    return orjson.dumps(_event(i, model_id=f"attacker-{i}"))


def deep_nesting(rng: np.random.Generator, i: int) -> bytes:
    depth = 5000
    if i % 2:
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


def wrong_encoding(rng: np.random.Generator, i: int) -> bytes:
    choice = i % 4
    text = '{"event_id": "caf\u00e9", "model_id": "m"}'
    if choice == 0:
        return text.encode("latin-1")
    if choice == 1:
        return orjson.dumps(_event(i)).decode().encode("utf-16")
    if choice == 2:
        return b'{"event_id": "\xed\xa0\x80", "model_id": "m"}'  # a lone surrogate in UTF-8
    return b'{"event_id": "\xff\xfe\xfd"}'


def empty(rng: np.random.Generator, i: int) -> bytes:
    return [b"", b"[]"][i % 2]


def oversize(max_bytes: int) -> Callable[[np.random.Generator, int], bytes]:
    def gen(rng: np.random.Generator, i: int) -> bytes:
        n = 200
        doc = batch_doc(MODEL, 10_000_000 + i * n, n, rng)
        doc["source_id"] = ["s" * 64] * n
        raw = orjson.dumps(doc)
        reps = max_bytes // len(raw) + 1
        doc["features"]["padding"] = ["p" * (len(raw) * reps // n + 1)] * n
        out = orjson.dumps(doc)
        assert len(out) > max_bytes
        return out

    return gen


#: kind -> (generator, reason it must be dead-lettered with)
KINDS: dict[str, tuple[Callable[[np.random.Generator, int], bytes], str]] = {
    "invalid_json": (invalid_json, "invalid_json"),
    "wrong_types": (wrong_types, "schema"),
    "bad_time": (bad_time, "bad_time"),
    "nan_infinity": (nan_infinity, "non_finite"),
    "missing_fields": (missing_fields, "schema"),
    "unknown_model": (unknown_model, "unknown_model"),
    "deep_nesting": (deep_nesting, "too_deep"),
    "wrong_encoding": (wrong_encoding, "invalid_encoding"),
    "empty": (empty, "empty"),
}


def malformed(n: int, seed: int, max_bytes: int, oversize_count: int = 100) -> list[tuple[str, str, bytes]]:
    """``n`` malformed values (kind, expected reason, bytes), every kind present, shuffled."""
    rng = np.random.default_rng(seed)
    kinds = list(KINDS)
    out = [("oversize", "too_large", oversize(max_bytes)(rng, i)) for i in range(oversize_count)]
    for i in range(n - oversize_count):
        kind = kinds[i % len(kinds)]
        gen, reason = KINDS[kind]
        out.append((kind, reason, gen(rng, i)))
    order = rng.permutation(len(out))
    return [out[j] for j in order]
