"""Webhook signatures: base64 of HMAC-SHA256 over the exact body bytes (Shopify's scheme).

Pure functions, no I/O. Used by every signed webhook (ingestion's channel orders,
status-tracking's fulfilment callbacks). A sender signs the raw request body with its shared
secret and sends the result in :data:`SIGNATURE_HEADER` (Shopify sends its own
:data:`SHOPIFY_SIGNATURE_HEADER`, accepted for the ``shopify`` channel); we recompute it over
the bytes as received, before parsing anything.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping

SIGNATURE_HEADER = "X-Orderstream-Hmac-Sha256"
SHOPIFY_SIGNATURE_HEADER = "X-Shopify-Hmac-Sha256"


def _digest(body: bytes, secret: str) -> bytes:
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha256).digest()


def sign(body: bytes, secret: str) -> str:
    """The signature of ``body`` under ``secret``: base64 of its HMAC-SHA256."""
    return base64.b64encode(_digest(body, secret)).decode("ascii")


def verify(body: bytes, secret: str, signature: str | None) -> bool:
    """Whether ``signature`` (surrounding whitespace ignored) signs ``body`` under ``secret``.

    False, never an exception, for a missing, empty or malformed signature, and for an empty
    secret (an unconfigured channel must not accept what anyone could sign).
    """
    if not secret or signature is None:
        return False
    try:
        given = base64.b64decode(signature.strip(), validate=True)
    except (binascii.Error, ValueError):  # not base64, or not ASCII
        return False
    return hmac.compare_digest(given, _digest(body, secret))


def signature_headers(channel: str) -> tuple[str, ...]:
    """The headers that may carry ``channel``'s signature, in order of preference."""
    if channel == "shopify":
        return (SIGNATURE_HEADER, SHOPIFY_SIGNATURE_HEADER)
    return (SIGNATURE_HEADER,)


def signature_of(headers: Mapping[str, str], channel: str) -> str | None:
    """The signature ``channel`` sent in ``headers`` (names compared case-insensitively),
    or None when there is none."""
    folded = {name.lower(): value for name, value in headers.items()}
    for name in signature_headers(channel):
        value = folded.get(name.lower())
        if value is not None:
            return value
    return None
