"""Signatures: the implementation and the snippet in docs/alerts.md agree, reject tampering."""

from __future__ import annotations

import hashlib
import hmac
import time

import pytest

from streams.alerts.signing import sign, signature, verify_signature
from tests.streams.alerts.helpers import documented_verify

BODY = b'{"status":"firing","value":0.001}'


def test_signature_is_hmac_sha256_of_timestamp_dot_body():
    expected = hmac.new(b"k", b"1700000000." + BODY, hashlib.sha256).hexdigest()
    assert signature(b"k", BODY, 1700000000) == expected
    assert sign(b"k", BODY, 1700000000) == f"t=1700000000,v1={expected}"


@pytest.mark.parametrize("verify", [verify_signature, documented_verify()], ids=["library", "docs-snippet"])
def test_verify_accepts_fresh_and_rejects_tampered_stale_and_wrong(verify):
    h = sign(b"k", BODY)
    assert verify(b"k", BODY, h)
    assert not verify(b"other", BODY, h)
    assert not verify(b"k", BODY + b" ", h)
    old = sign(b"k", BODY, int(time.time()) - 301)
    assert not verify(b"k", BODY, old)
    assert not verify(b"k", BODY, "garbage")
    assert not verify(b"k", BODY, "t=abc,v1=00")
    # key rotation: several v1 entries, one matching is enough
    t = int(time.time())
    assert verify(b"k", BODY, f"t={t},v1={'0' * 64},v1={signature(b'k', BODY, t)}")
