"""Webhook signatures: base64 HMAC-SHA256 over the exact body, as Shopify signs its webhooks."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.signing import (
    SHOPIFY_SIGNATURE_HEADER,
    SIGNATURE_HEADER,
    sign,
    signature_of,
    verify,
)

BODY = '{"order_id": "W-10001", "currency": "CNY", "customer": {"nickname": "小王"}}'.encode()
SECRET = "s3cret"


def test_known_vector() -> None:
    # HMAC-SHA256(key="key", "The quick brown fox jumps over the lazy dog") is the published
    # f7bc83f4...2d1a3cd8; the header carries its base64.
    assert sign(b"The quick brown fox jumps over the lazy dog", "key") == (
        "97yD9DBThCSxMpjmqm+xQ+9NWaFJRhdZl0edvC0aPNg=")


@given(body=st.binary(max_size=2048), secret=st.text(min_size=1, max_size=64))
def test_round_trip(body: bytes, secret: str) -> None:
    assert verify(body, secret, sign(body, secret))


def test_tampered_body_fails() -> None:
    signature = sign(BODY, SECRET)
    assert not verify(BODY.replace(b"W-10001", b"W-10002"), SECRET, signature)
    assert not verify(BODY + b" ", SECRET, signature)  # even insignificant JSON whitespace
    assert not verify(BODY[:-1], SECRET, signature)


def test_wrong_secret_fails() -> None:
    assert not verify(BODY, "other", sign(BODY, SECRET))
    assert not verify(BODY, SECRET.upper(), sign(BODY, SECRET))


def test_surrounding_whitespace_is_ignored() -> None:
    signature = sign(BODY, SECRET)
    assert verify(BODY, SECRET, f"  {signature}\r\n")
    assert verify(BODY, SECRET, f"\t{signature} ")


@pytest.mark.parametrize("signature", [
    None, "", "   ", "not base64 at all!", "%%%%", "Zm9v", "Zm9vYmFy====", "ÄÖÜ签名",
    "sha256=" + "0" * 64,
])
def test_missing_or_garbage_signature_fails(signature: str | None) -> None:
    assert not verify(BODY, SECRET, signature)


def test_signature_of_another_length_fails() -> None:
    digest = base64.b64decode(sign(BODY, SECRET))
    assert not verify(BODY, SECRET, base64.b64encode(digest[:-1]).decode())
    assert not verify(BODY, SECRET, base64.b64encode(digest + b"\0").decode())


def test_hex_digest_is_not_accepted() -> None:
    hexdigest = hmac.new(SECRET.encode(), BODY, hashlib.sha256).hexdigest()
    assert not verify(BODY, SECRET, hexdigest)


def test_empty_secret_never_verifies() -> None:
    assert not verify(BODY, "", sign(BODY, ""))


def test_same_value_as_shopify_computes() -> None:
    # Shopify's documented check: base64(HMAC-SHA256(secret, raw body)) == the header.
    expected = base64.b64encode(hmac.new(b"hush", BODY, hashlib.sha256).digest()).decode()
    assert sign(BODY, "hush") == expected
    assert verify(BODY, "hush", expected)


def test_shopify_header_is_accepted_for_shopify_only() -> None:
    signature = sign(BODY, SECRET)
    assert signature_of({SHOPIFY_SIGNATURE_HEADER: signature}, "shopify") == signature
    assert signature_of({SHOPIFY_SIGNATURE_HEADER: signature}, "web") is None
    for channel in ("web", "shopify"):
        assert signature_of({SIGNATURE_HEADER: signature}, channel) == signature


def test_header_names_are_case_insensitive() -> None:
    assert signature_of({"x-orderstream-hmac-sha256": "abc"}, "web") == "abc"
    assert signature_of({"X-SHOPIFY-HMAC-SHA256": "abc"}, "shopify") == "abc"


def test_own_header_is_preferred_when_both_are_sent() -> None:
    headers = {SHOPIFY_SIGNATURE_HEADER: "theirs", SIGNATURE_HEADER: "ours"}
    assert signature_of(headers, "shopify") == "ours"


def test_no_signature_header() -> None:
    assert signature_of({"Content-Type": "application/json"}, "web") is None
