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


VERIFIERS = [verify_signature, documented_verify(), documented_verify("README.md")]
IDS = ["library", "docs-snippet", "readme-snippet"]


@pytest.mark.parametrize("verify", VERIFIERS, ids=IDS)
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


@pytest.mark.parametrize("verify", VERIFIERS, ids=IDS)
@pytest.mark.parametrize(
    "header",
    [
        None,
        b"t=1,v1=00",
        "",
        ",",
        "t=",
        "v1=",
        "t=\u00b2,v1=00",
        "t=12\u0663,v1=00",
        "t={t},v1=\u00e9\u00e9",
        "t={t},v1",
        "=,=,=",
        "t={t}",
    ],
)
def test_missing_or_malformed_header_is_false_not_an_exception(verify, header):
    """A request without the header (``headers.get()`` -> None) or with garbage in it is refused."""
    if isinstance(header, str):
        header = header.replace("{t}", str(int(time.time())))
    assert verify(b"k", BODY, header) is False
