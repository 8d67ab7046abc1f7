"""A send that got no HTTP answer, classed by how far it got."""

from __future__ import annotations

import aiohttp

from services.notifier.providers.base import Failure, SendResult


def unanswered(provider: str, exc: BaseException, timeout: float) -> SendResult:
    """A timeout, or a connection cut after the request went out, may have delivered the
    message: its fate is unknown. A connection never made delivered nothing: transient."""
    if isinstance(exc, TimeoutError):
        return SendResult(provider, False, "timeout", f"no answer within {timeout:g}s",
                          Failure.UNKNOWN)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return SendResult(provider, False, "connect_error", repr(exc)[:200], Failure.TRANSIENT)
    return SendResult(provider, False, "connection_lost", repr(exc)[:200], Failure.UNKNOWN)
