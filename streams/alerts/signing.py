"""HMAC-SHA256 signatures of webhook bodies (Stripe-style, timestamped).

Every delivery carries::

    X-Driftwatch-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, f"{t}." + body)>
    Idempotency-Key: <event id>

The timestamp is part of the signed text, so a captured request cannot be replayed
later than the receiver's tolerance (5 minutes by default); the idempotency key lets the
receiver drop the duplicates that at-least-once delivery may produce. Each retry is
signed afresh (new ``t``) over the same body. Receivers verify with
:func:`verify_signature` or the ten-line snippet in docs/alerts.md.

>>> h = sign(b"s3cret", b'{"a":1}', timestamp=1700000000)
>>> h.startswith("t=1700000000,v1=")
True
>>> verify_signature(b"s3cret", b'{"a":1}', h, now=1700000010)
True
>>> verify_signature(b"wrong", b'{"a":1}', h, now=1700000010)
False
"""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "X-Driftwatch-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
DEFAULT_TOLERANCE_SECONDS = 300


def signature(secret: bytes, body: bytes, timestamp: int) -> str:
    """Hex HMAC-SHA256 of ``f"{timestamp}." + body`` under ``secret``."""
    return hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()


def sign(secret: bytes, body: bytes, timestamp: int | None = None) -> str:
    """The ``X-Driftwatch-Signature`` header value for ``body`` (now, unless told)."""
    t = int(time.time()) if timestamp is None else int(timestamp)
    return f"t={t},v1={signature(secret, body, t)}"


def verify_signature(
    secret: bytes,
    body: bytes,
    header: str | None,
    tolerance: int = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> bool:
    """True if ``header`` is a valid signature of ``body`` made within ``tolerance`` seconds.

    Accepts several ``v1=`` entries (for secret rotation: any one matching is enough). A
    missing (``None``) or malformed header is False, never an exception.
    """
    if not isinstance(header, str):
        return False
    try:
        parts = [p.split("=", 1) for p in header.split(",")]
        t_text = next(v for k, v in parts if k.strip() == "t").strip()
        if not (t_text.isascii() and t_text.isdigit()):
            return False
        t = int(t_text)
        sigs = [v.strip() for k, v in parts if k.strip() == "v1"]
    except (ValueError, StopIteration):
        return False
    if abs((time.time() if now is None else now) - t) > tolerance:
        return False
    expected = signature(secret, body, t).encode()
    return any(hmac.compare_digest(expected, s.encode()) for s in sigs)
