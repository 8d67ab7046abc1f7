"""Status-tracking's HTTP API.

``POST /v1/fulfilment/{source}`` takes warehouse and carrier news:

- a JSON source (``wms``, or any name given a secret in ``fulfilment_secrets``) posts one
  :class:`~services.status.tracking.Notice`, signed like every webhook of ours (base64
  HMAC-SHA256 of the body in ``X-Orderstream-Hmac-Sha256``); answered 202 once the event is
  acknowledged on ``fulfilment.events``;
- ``kuaidi100`` posts its subscription push as the provider does (form fields ``param`` and
  ``sign`` = MD5 of param + salt); the order comes from the callback URL's ``order_id`` query
  parameter, or from the parcel's tracking number; answered with Kuaidi100's own
  acknowledgement JSON so the provider stops retrying.

Errors say what to fix: 401 bad or missing signature, 404 unknown source or parcel, 409 a
push for an order that ships another parcel, 413 too large, 400 malformed, 422 valid JSON
that cannot be an event (unknown carrier code, ...), 503 broker unavailable (retry).

``GET /v1/orders/{order_id}`` and ``GET /v1/orders?status=&channel=&stale=&limit=&after=``
answer from PostgreSQL, with every time in UTC and in the merchant's zone.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl
from zoneinfo import ZoneInfo

import faust
from aiokafka.errors import KafkaError
from faust.exceptions import ProducerSendError

from services.status import store
from services.status.carriers import CallbackRejected, parse_push
from services.status.carriers.kuaidi100 import PUSH_ACK
from services.status.metrics import StatusMetrics
from services.status.settings import StatusSettings
from services.status.tracking import news, notice_event, scan_event
from shared import signing
from shared.codec import InvalidRecord
from shared.events import Channel, FulfilmentEvent, OrderStatus
from shared.runtime import Runtime
from shared.timeutil import utc_now
from shared.topics import FULFILMENT_EVENTS

log = logging.getLogger(__name__)

KUAIDI100 = "kuaidi100"
ACK_TIMEOUT = 10.0
SEND_FAILURES = (KafkaError, ProducerSendError, OSError, TimeoutError)
MAX_PAGE = 500


class Refused(Exception):
    def __init__(self, status: int, reason: str, error: str) -> None:
        super().__init__(f"{status} {reason}: {error}")
        self.status, self.reason, self.error = status, reason, error


class FulfilmentWebhook:
    """The endpoint's logic apart from the web framework (``request`` is aiohttp's)."""

    def __init__(self, runtime: Runtime, settings: StatusSettings, metrics: StatusMetrics
                 ) -> None:
        self.runtime = runtime
        self.settings = settings
        self.metrics = metrics

    async def handle(self, source: str, request: Any) -> tuple[int, dict[str, Any]]:
        kuaidi100 = source == KUAIDI100 and bool(self.settings.kuaidi100_salt)
        known = kuaidi100 or source in self.settings.fulfilment_secrets
        try:
            if not known:
                raise Refused(404, "unknown_source", f"no fulfilment source named {source[:64]!r}")
            body = await self._read(request)
            if kuaidi100:
                events = await self._kuaidi100(request, body)
            else:
                events = [self._notice(source, request, body)]
            await self._publish(events)
        except Refused as exc:
            self.metrics.webhook.labels(source if known else "unknown", str(exc.status)).inc()
            log.info("event=fulfilment_refused source=%s code=%s reason=%s error=%s",
                     source[:64], exc.status, exc.reason, exc.error[:300])
            if kuaidi100:
                return exc.status, {"result": False, "returnCode": str(exc.status),
                                    "message": f"{exc.reason}: {exc.error}"}
            return exc.status, {"reason": exc.reason, "error": exc.error}
        status = 200 if kuaidi100 else 202
        self.metrics.webhook.labels(source, str(status)).inc()
        if kuaidi100:
            return status, dict(PUSH_ACK)
        return status, {"status": "accepted", "event_id": events[0].event_id}

    async def _read(self, request: Any) -> bytes:
        limit = self.settings.webhook_max_bytes
        if request.content_length is not None and request.content_length > limit:
            raise Refused(413, "too_large", f"body of {request.content_length} bytes is over "
                                            f"the limit of {limit}")
        body = await request.content.read(limit + 1)
        if len(body) > limit:
            raise Refused(413, "too_large", f"body is over the limit of {limit} bytes")
        return body

    def _notice(self, source: str, request: Any, body: bytes) -> FulfilmentEvent:
        signature = signing.signature_of(request.headers, source)
        if signature is None:
            raise Refused(401, "missing_signature",
                          f"the request has no {signing.SIGNATURE_HEADER} header")
        if not signing.verify(body, self.settings.fulfilment_secrets[source], signature):
            raise Refused(401, "bad_signature",
                          "the signature does not match the body under the source's secret")
        try:
            return notice_event(body, source, utc_now())
        except InvalidRecord as exc:
            status = 400 if exc.reason in ("invalid_json", "invalid_notice") else 422
            detail = "; ".join(f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg')}"
                               for e in exc.field_errors)
            raise Refused(status, exc.reason, exc.error + (f" ({detail})" if detail else "")
                          ) from exc

    async def _kuaidi100(self, request: Any, body: bytes) -> list[FulfilmentEvent]:
        try:
            form = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
        except UnicodeDecodeError as exc:
            raise Refused(400, "malformed", "the push is not UTF-8 form data") from exc
        try:
            carrier, number, scans = parse_push(form, self.settings.kuaidi100_salt)
        except CallbackRejected as exc:
            status = {"bad_signature": 401, "unknown_carrier": 422}.get(exc.reason, 400)
            raise Refused(status, exc.reason, str(exc)) from exc
        pool = await self.runtime.db.pool()
        order_id = request.query.get("order_id")
        last_scan = None
        if order_id:
            # The signature covers the body, not the URL: a push must not be replayed onto
            # another order. An order that ships another parcel refuses it.
            known = await store.parcel_of(pool, order_id)
            if known is not None and known.tracking_number is not None and (
                known.carrier, known.tracking_number) != (carrier, number):
                raise Refused(409, "parcel_mismatch",
                              f"order {order_id[:64]} ships {known.carrier} "
                              f"{known.tracking_number}, not {carrier} {number}")
            if known is not None and known.tracking_number == number:
                last_scan = known.last_scan_at
        elif (found := await store.order_for_parcel(pool, carrier, number)) is not None:
            order_id, last_scan = found
        if not order_id:
            raise Refused(404, "unknown_parcel",
                          f"no order has {carrier} parcel {number}, and the callback URL "
                          "names none (?order_id=)")
        now = utc_now()
        # A push carries every scan so far: pass on what the order does not have yet.
        return [scan_event(s, order_id, f"carrier:{KUAIDI100}", now)
                for s in news(scans, last_scan)]

    async def _publish(self, events: list[FulfilmentEvent]) -> None:
        try:
            await asyncio.wait_for(self.runtime.publish_many(
                FULFILMENT_EVENTS, [(e.order_id, e) for e in events]), ACK_TIMEOUT)
        except SEND_FAILURES as exc:
            raise Refused(503, "broker_unavailable",
                          f"not stored, retry later ({type(exc).__name__})") from exc


# --- the query API ---------------------------------------------------------------------------


def _times(value: datetime | None, zone: ZoneInfo) -> dict[str, str] | None:
    if value is None:
        return None
    return {"utc": value.isoformat().replace("+00:00", "Z"),
            "local": value.astimezone(zone).isoformat(), "zone": zone.key}


def order_view(row: Any, zone: ZoneInfo) -> dict[str, Any]:
    return {
        "order_id": row["order_id"], "channel": row["channel"],
        "channel_order_id": row["channel_order_id"], "customer_id": row["customer_id"],
        "status": row["status"], "status_since": _times(row["status_since"], zone),
        "paid": row["paid"], "placed_at": _times(row["placed_at"], zone),
        "carrier": row["carrier"], "tracking_number": row["tracking_number"],
        "last_scan_at": _times(row["last_scan_at"], zone),
        "stale": bool(row["stale"]), "deadline": _times(row["deadline_at"], zone),
        "next_poll": _times(row["next_poll_at"], zone),
    }


def history_view(row: Any, zone: ZoneInfo) -> dict[str, Any]:
    return {
        "event_id": row["event_id"], "from_status": row["from_status"],
        "to_status": row["to_status"] if row["applied"] else None,
        "reported": row["reported"], "applied": row["applied"], "at": _times(row["at"], zone),
        "cause_event_id": row["cause_event_id"], "detail": row["detail"],
    }


def scan_view(row: Any, zone: ZoneInfo) -> dict[str, Any]:
    return {
        "event_id": row["event_id"], "event_type": row["event_type"], "via": row["via"],
        "source": row["source"], "carrier": row["carrier"],
        "tracking_number": row["tracking_number"], "location": row["location"],
        "detail": row["detail"], "scanned_at": _times(row["scanned_at"], zone),
        "received_at": _times(row["received_at"], zone),
    }


def list_filters(query: Any) -> dict[str, Any]:
    """The list endpoint's filters, or :class:`Refused` (400) naming the bad one."""
    status = query.get("status") or None
    if status is not None and status not in OrderStatus.__members__:
        raise Refused(400, "bad_status", f"status must be one of {', '.join(OrderStatus)}")
    channel = query.get("channel") or None
    if channel is not None and channel not in {c.value for c in Channel}:
        raise Refused(400, "bad_channel", f"channel must be one of {', '.join(Channel)}")
    stale_text = (query.get("stale") or "").lower()
    if stale_text not in ("", "true", "false", "1", "0"):
        raise Refused(400, "bad_stale", "stale must be true or false")
    stale = None if stale_text == "" else stale_text in ("true", "1")
    try:
        limit = int(query.get("limit") or 100)
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_PAGE:
        raise Refused(400, "bad_limit", f"limit must be 1..{MAX_PAGE}")
    return {"status": status, "channel": channel, "stale": stale, "limit": limit,
            "after": query.get("after") or None}


def register(runtime: Runtime, settings: StatusSettings, metrics: StatusMetrics) -> None:
    webhook = FulfilmentWebhook(runtime, settings, metrics)
    zone = ZoneInfo(settings.merchant_zone)

    @runtime.app.page("/v1/fulfilment/{source}", name="fulfilment")
    class Fulfilment(faust.web.View):
        async def post(self, request: faust.web.Request, source: str) -> faust.web.Response:
            status, body = await webhook.handle(source, request)
            return self.json(body, status=status)

    @runtime.app.page("/v1/orders/{order_id}", name="order")
    class Order(faust.web.View):
        async def get(self, request: faust.web.Request, order_id: str) -> faust.web.Response:
            current, history, scans = await store.order(await runtime.db.pool(), order_id)
            if current is None:
                return self.json({"reason": "unknown_order",
                                  "error": f"no order {order_id[:64]!r}"}, status=404)
            view = order_view(current, zone)
            view["history"] = [history_view(h, zone) for h in history]
            view["carrier_events"] = [scan_view(s, zone) for s in scans]
            return self.json(view)

    @runtime.app.page("/v1/orders", name="orders")
    class Orders(faust.web.View):
        async def get(self, request: faust.web.Request) -> faust.web.Response:
            try:
                filters = list_filters(request.query)
            except Refused as exc:
                return self.json({"reason": exc.reason, "error": exc.error}, status=400)
            rows = await store.orders(await runtime.db.pool(), **filters)
            items = [order_view(r, zone) for r in rows]
            following = items[-1]["order_id"] if len(items) == filters["limit"] else None
            return self.json({"orders": items, "next_after": following})
