"""``POST /v1/channels/{channel}/orders``: a channel pushes one signed order; we answer 202
only once the broker has acknowledged the record on ``orders.raw``.

The request's raw bytes are what is signed and what is stored: the signature is checked
before anything is parsed, and the record's value is the body exactly as received, keyed
``<channel>:<order id>`` with headers ``channel`` and ``source=webhook`` (the same record a
channel producing to Kafka directly would write). Any answer but 202 means "not taken": a
channel retries on 503; 4xx answers say what to fix. A retry after a lost 202 only repeats
the record under the same key, which ingestion's dedupe table absorbs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import faust
from aiokafka.errors import KafkaError
from faust.exceptions import ProducerSendError
from prometheus_client import Counter

from services.ingestion.channels import ADAPTERS
from services.ingestion.settings import IngestionSettings
from shared import signing
from shared.codec import InvalidRecord, parse_json
from shared.runtime import Runtime
from shared.topics import ORDERS_RAW

log = logging.getLogger(__name__)

ROUTE = "/v1/channels/{channel}/orders"
#: Longest wait for the broker's acknowledgement before answering 503 (a channel such as
#: Shopify gives up on a webhook after a few seconds anyway and retries).
ACK_TIMEOUT = 10.0
#: Send failures that mean "the broker did not take it", answered 503 so the channel retries.
SEND_FAILURES = (KafkaError, ProducerSendError, OSError, TimeoutError)
_READ_CHUNK = 64 * 1024


def requests_counter(registry: Any) -> Counter:
    return Counter("orderstream_webhook_requests_total",
                   "Webhook order requests by channel and HTTP status",
                   ["channel", "code"], registry=registry)


@dataclass(frozen=True)
class Reply:
    status: int
    body: dict[str, Any]


class Refused(Exception):
    """A request answered with an error: HTTP status, machine reason, readable message."""

    def __init__(self, status: int, reason: str, error: str) -> None:
        super().__init__(f"{status} {reason}: {error}")
        self.status = status
        self.reason = reason
        self.error = error


@dataclass
class Webhook:
    """The endpoint's logic, apart from the web framework: ``request`` is aiohttp's request
    (``headers``, ``content_length``, ``content``), ``topic`` the Faust topic ``orders.raw``."""

    topic: Any
    secrets: Mapping[str, str]
    max_bytes: int
    requests: Counter
    ack_timeout: float = ACK_TIMEOUT
    adapters: Mapping[str, Any] = field(default_factory=lambda: ADAPTERS)

    async def handle(self, channel: str, request: Any) -> Reply:
        try:
            reply = await self._accept(channel, request)
        except Refused as exc:
            reply = Reply(exc.status, {"error": exc.error, "reason": exc.reason})
            log.info("event=webhook_refused channel=%s code=%s reason=%s error=%s",
                     channel[:64], exc.status, exc.reason, exc.error[:300])
        # Unknown channels share one label: a path segment must not mint new time series.
        label = channel if channel in self.adapters else "unknown"
        self.requests.labels(label, str(reply.status)).inc()
        return reply

    async def _accept(self, channel: str, request: Any) -> Reply:
        adapter = self.adapters.get(channel)
        if adapter is None:
            raise Refused(404, "unknown_channel", f"no channel named {channel[:64]!r}")
        declared = request.content_length
        if declared is not None and declared > self.max_bytes:
            raise Refused(413, "too_large",
                          f"body of {declared} bytes is over the limit of {self.max_bytes}")
        secret = self.secrets.get(channel)
        if not secret:
            raise Refused(401, "channel_not_configured",
                          f"no webhook secret is configured for channel {channel!r}")
        signature = signing.signature_of(request.headers, channel)
        if signature is None:
            names = " or ".join(signing.signature_headers(channel))
            raise Refused(401, "missing_signature", f"the request has no {names} header")
        body = await self._read(request)
        if not signing.verify(body, secret, signature):
            raise Refused(401, "bad_signature",
                          "the signature does not match the body under the channel's secret")
        try:
            order_id = adapter.order_id_of(parse_json(body))
        except InvalidRecord as exc:
            raise Refused(400, exc.reason, exc.error) from exc
        key = f"{channel}:{order_id}"
        try:
            metadata = await asyncio.wait_for(self._publish(channel, key, body),
                                              self.ack_timeout)
        except SEND_FAILURES as exc:
            log.warning("event=webhook_send_failed channel=%s key=%s error=%r",
                        channel, key, exc)
            raise Refused(503, "broker_unavailable",
                          f"the order was not stored, retry later ({type(exc).__name__}: "
                          f"{str(exc)[:200] or 'no acknowledgement in time'})") from exc
        log.info("event=webhook_accepted channel=%s key=%s partition=%s offset=%s",
                 channel, key, metadata.partition, metadata.offset)
        return Reply(202, {"status": "accepted", "key": key})

    async def _read(self, request: Any) -> bytes:
        """The body, reading at most one byte past the limit (the header may be absent, as
        with chunked encoding, or wrong)."""
        body = bytearray()
        while True:
            chunk = await request.content.read(min(_READ_CHUNK, self.max_bytes + 1 - len(body)))
            if not chunk:
                return bytes(body)
            body += chunk
            if len(body) > self.max_bytes:
                raise Refused(413, "too_large",
                              f"body is over the limit of {self.max_bytes} bytes")

    async def _publish(self, channel: str, key: str, body: bytes) -> Any:
        """Send and wait for the broker's acknowledgement; returns its RecordMetadata.

        ``Topic.send`` returns once the record is queued in the producer; what it returns is
        the producer's delivery future, resolved by the broker's produce response (acks=all)
        or failed with the send error. ``force`` keeps Faust from deferring the send to the
        commit of a stream event (it is not one here, but nothing must ever defer it).
        """
        delivery = await self.topic.send(
            key=key.encode(), value=body,
            headers={"channel": channel.encode(), "source": b"webhook"}, force=True,
        )
        # Shielded: a timeout abandons the wait, not the delivery future Faust watches.
        return await asyncio.shield(delivery)


def register(runtime: Runtime, settings: IngestionSettings) -> None:
    """Add ``POST /v1/channels/{channel}/orders`` to ``runtime``'s web server."""
    webhook = Webhook(
        topic=runtime.topic(ORDERS_RAW),
        secrets=settings.webhook_secrets,
        max_bytes=settings.webhook_max_bytes,
        requests=requests_counter(runtime.registry),
    )

    @runtime.app.page(ROUTE, name="channel_orders")
    class ChannelOrders(faust.web.View):
        async def post(self, request: faust.web.Request, channel: str) -> faust.web.Response:
            reply = await webhook.handle(channel, request)
            return self.json(reply.body, status=reply.status)
