"""Status-tracking through the real service: payment and warehouse news move the order, the
signed fulfilment webhook refuses what it cannot take and says why, news that comes before
its order waits for it, the query API answers from PostgreSQL in UTC and the merchant's zone,
and an order stuck past its deadline raises one alert."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from urllib.parse import urlencode

import aiohttp
import pytest
from support import collect, eventually, given_stock, produce, running_system

from services.status.carriers import Scan, Stage, build_result, push_form
from shared.codec import encode
from shared.events import (
    Channel,
    Customer,
    OrderLine,
    OrderSubmitted,
    PaymentConfirmed,
)
from shared.signing import SIGNATURE_HEADER, sign
from shared.topics import OPS_ALERTS, ORDERS_DLQ, ORDERS_STATUS, ORDERS_SUBMITTED, PAYMENTS_EVENTS

pytestmark = [pytest.mark.e2e, pytest.mark.kafka, pytest.mark.postgres]

SECRET = "wms-secret"
SALT = "push-salt"


@pytest.fixture(scope="module")
def status(stack_info, broker, tmp_path_factory):
    env = {
        "ORDERSTREAM_STATUS_FULFILMENT_SECRETS": json.dumps({"wms": SECRET}),
        "ORDERSTREAM_STATUS_STALE_AFTER": json.dumps({"RESERVED": 3}),
        "ORDERSTREAM_STATUS_STALE_CHECK_SECONDS": "0.5",
        "ORDERSTREAM_STATUS_STALE_REPEAT": "3600",
        "ORDERSTREAM_STATUS_WEBHOOK_MAX_BYTES": "2048",
        "ORDERSTREAM_STATUS_KUAIDI100_SALT": SALT,
    }
    with running_system(stack_info, broker, tmp_path_factory.mktemp("status"), env,
                        services=("status", "inventory")) as system:
        yield system


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def submitted(order_id: str, sku: str, *, paid: bool = False) -> OrderSubmitted:
    placed = datetime(2026, 11, 24, 16, 30, tzinfo=UTC)  # 00:30 on the 25th in Shanghai
    return OrderSubmitted(
        order_id=order_id, correlation_id=order_id, channel=Channel.WEB,
        channel_order_id=f"W-{order_id}", customer=Customer(customer_id="c-1"),
        lines=(OrderLine(line=1, sku=sku, quantity=1, unit_price=Decimal("9.90")),),
        currency="CNY", total=Decimal("9.90"), paid=paid, placed_at=placed,
    )


async def post(system, path: str, body: bytes, headers: dict[str, str] | None = None):
    url = f"http://127.0.0.1:{system.port('status')}{path}"
    async with aiohttp.ClientSession() as session, session.post(
        url, data=body, headers=headers or {}
    ) as resp:
        return resp.status, await resp.json(content_type=None)


async def get(system, path: str):
    url = f"http://127.0.0.1:{system.port('status')}{path}"
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return resp.status, await resp.json(content_type=None)


def notice(order_id: str, event_type: str, **fields) -> bytes:
    return json.dumps({"event_type": event_type, "order_id": order_id, **fields}).encode()


async def wms(system, body: bytes):
    return await post(system, "/v1/fulfilment/wms", body,
                      {SIGNATURE_HEADER: sign(body, SECRET), "Content-Type": "application/json"})


async def statuses(system, order_id: str, last: str, timeout: float = 60) -> list[str]:
    def done(seen):
        return any(s["order_id"] == order_id and s["to_status"] == last for s in seen)

    seen = await collect(system.conn, ORDERS_STATUS, done, timeout=timeout)
    return [s["to_status"] for s in seen if s["order_id"] == order_id]


async def test_an_order_moves_from_payment_to_delivery_and_the_api_shows_its_life(status):
    sku, order = unique("SKU"), unique("ord")
    await given_stock(status.conn, sku, 3)
    await produce(status.conn, ORDERS_SUBMITTED, [(order, encode(submitted(order, sku)))])
    assert await statuses(status, order, "RESERVED") == ["SUBMITTED", "RESERVED"]

    payment = PaymentConfirmed(order_id=order, correlation_id=order, amount=Decimal("9.90"),
                               currency="CNY")
    await produce(status.conn, PAYMENTS_EVENTS, [(order, encode(payment))])
    # (topics are not ordered across each other: a notice sent now could overtake the payment)
    assert (await statuses(status, order, "PAID"))[-1] == "PAID"
    scanned = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=1)
    for event_type, extra in [
        ("Packed", {}),
        ("PickedUp", {"carrier": "SF", "tracking_number": "SF1234567890",
                      "scanned_at": scanned.isoformat()}),
        # late: an earlier stage after a later one is history only
        ("Packed", {"event_id": "wms-late-pack"}),
        ("Delivered", {"carrier": "sf", "tracking_number": "SF1234567890",
                       "scanned_at": (scanned + timedelta(hours=20)).isoformat(),
                       "location": "深圳南山"}),
    ]:
        code, answer = await wms(status, notice(order, event_type, **extra))
        assert code == 202, answer
    changes = await statuses(status, order, "DELIVERED")
    assert changes == ["SUBMITTED", "RESERVED", "PAID", "PACKED", "PICKED_UP", "DELIVERED"]

    async def api_caught_up():
        code, view = await get(status, f"/v1/orders/{order}")
        return view if code == 200 and view["status"] == "DELIVERED" else None

    view = await eventually(api_caught_up)
    assert (view["carrier"], view["tracking_number"]) == ("SF", "SF1234567890")
    assert view["placed_at"] == {"utc": "2026-11-24T16:30:00Z", "zone": "Asia/Shanghai",
                                 "local": "2026-11-25T00:30:00+08:00"}
    delivered_at = scanned + timedelta(hours=20)  # the delivery scan's time
    assert view["status_since"]["utc"] == delivered_at.isoformat().replace("+00:00", "Z")
    applied = [h["to_status"] for h in view["history"] if h["applied"]]
    assert applied == changes
    [late] = [h for h in view["history"] if not h["applied"]]
    assert (late["reported"], late["to_status"]) == ("PACKED", None)
    assert "late PACKED" in late["detail"]
    # every notice taken in, in the order things happened (scan time, else arrival)
    events = view["carrier_events"]
    assert sorted(e["event_type"] for e in events) == ["Delivered", "Packed", "Packed",
                                                        "PickedUp"]
    assert [e["event_type"] for e in events][-2:] == ["PickedUp", "Delivered"]
    assert {e["via"] for e in events} == {"wms"}
    assert events[-1]["location"] == "深圳南山"
    assert view["stale"] is False and view["next_poll"] is None

    code, page = await get(status, "/v1/orders?status=DELIVERED&channel=web")
    assert code == 200 and order in [o["order_id"] for o in page["orders"]]


async def test_news_before_its_order_waits_and_is_applied_once_the_order_is_reserved(status):
    sku, order = unique("SKU"), unique("ord")
    await given_stock(status.conn, sku, 3)
    code, _ = await wms(status, notice(order, "Packed"))
    assert code == 202
    await asyncio.sleep(1)  # the notice is in the table before the order
    await produce(status.conn, ORDERS_SUBMITTED, [(order, encode(submitted(order, sku,
                                                                            paid=True)))])
    assert await statuses(status, order, "PACKED") == ["SUBMITTED", "RESERVED", "PAID", "PACKED"]


@pytest.mark.parametrize(
    ("path", "body", "headers", "code", "reason"),
    [
        ("/v1/fulfilment/nowhere", b"{}", {}, 404, "unknown_source"),
        ("/v1/fulfilment/wms", b"{}", {}, 401, "missing_signature"),
        ("/v1/fulfilment/wms", b"{}", {SIGNATURE_HEADER: sign(b"{}", "wrong")}, 401,
         "bad_signature"),
        ("/v1/fulfilment/wms", b"{not json", None, 400, "invalid_json"),
        ("/v1/fulfilment/wms", b'{"event_type": "Teleported", "order_id": "o-1"}', None, 400,
         "invalid_notice"),
        ("/v1/fulfilment/wms",
         b'{"event_type": "PickedUp", "order_id": "o-1", "carrier": "ACME",'
         b' "tracking_number": "1"}', None, 422, "unknown_carrier"),
        ("/v1/fulfilment/wms", b'{"event_type": "PickedUp", "order_id": "o-1"}', None, 400,
         "invalid_notice"),
        ("/v1/fulfilment/wms", b"x" * 4096, None, 413, "too_large"),
    ],
    ids=["unknown-source", "unsigned", "bad-signature", "not-json", "unknown-type",
         "unknown-carrier", "pickup-without-tracking", "too-large"],
)
async def test_the_fulfilment_webhook_refuses_with_the_reason(status, path, body, headers, code,
                                                              reason):
    if headers is None:
        headers = {SIGNATURE_HEADER: sign(body, SECRET)}
    got, answer = await post(status, path, body, headers)
    assert (got, answer["reason"]) == (code, reason), answer


async def test_query_api_refuses_bad_filters_and_unknown_orders(status):
    assert (await get(status, "/v1/orders/no-such-order"))[0] == 404
    for query in ("status=LOST", "channel=ebay", "stale=maybe", "limit=0"):
        code, answer = await get(status, f"/v1/orders?{query}")
        assert code == 400, (query, answer)


async def test_an_order_stuck_past_its_deadline_raises_one_alert(status):
    sku, order = unique("SKU"), unique("ord")
    await given_stock(status.conn, sku, 3)
    await produce(status.conn, ORDERS_SUBMITTED, [(order, encode(submitted(order, sku)))])
    # RESERVED has a 3 s deadline here and nobody pays: stale.
    alerts = await collect(
        status.conn, OPS_ALERTS,
        lambda seen: any(a["details"].get("order_id") == order for a in seen), timeout=60)
    # Checks keep running every 0.5 s: in the next 3 s no second alert (the repeat is 1 h).
    until = time.monotonic() + 3
    alerts = await collect(status.conn, OPS_ALERTS, lambda seen: time.monotonic() > until,
                           timeout=30)
    mine = [a for a in alerts if a["details"].get("order_id") == order]
    assert len({a["event_id"] for a in mine}) == 1
    [alert] = mine[:1]
    assert (alert["kind"], alert["details"]["status"]) == ("stale_order", "RESERVED")

    code, page = await get(status, "/v1/orders?stale=true&status=RESERVED")
    assert code == 200 and order in [o["order_id"] for o in page["orders"]]
    text = await _metrics(status)
    assert 'orderstream_status_stale_orders{status="RESERVED"}' in text


async def test_an_event_that_can_never_apply_is_dead_lettered(status):
    order = unique("ord")
    # an inventory answer for an order status-tracking never saw
    bad = json.dumps({"event_type": "StockReserved", "order_id": order, "line": 1,
                      "sku": "SKU-1", "quantity": 1}).encode()
    await produce(status.conn, "inventory.events", [(order, bad)])
    letters = await collect(status.conn, ORDERS_DLQ, lambda seen: any(
        d.get("original_key") and d["reason"] == "unknown_order" for d in seen), timeout=60)
    assert any(d["reason"] == "unknown_order" and d["service"] == "status" for d in letters)


async def _metrics(system) -> str:
    url = f"http://127.0.0.1:{system.port('status')}/metrics"
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return await resp.text()


def push(number: str, stages: list[tuple[str, str]], salt: str = SALT) -> bytes:
    """A Kuaidi100 push for SF parcel ``number`` with (stage, state code) scans a minute apart."""
    base = datetime.now(UTC).replace(microsecond=0)
    scans = [Scan(carrier="SF", tracking_number=number, stage=Stage(stage),
                  scanned_at=base + timedelta(minutes=i), description=f"{stage} 扫描",
                  location="杭州", provider_state=code)
             for i, (stage, code) in enumerate(stages)]
    return urlencode(push_form(build_result("SF", number, scans), salt)).encode()


async def test_a_kuaidi100_push_moves_the_order_and_is_answered_the_providers_way(status):
    sku, order, number = unique("SKU"), unique("ord"), f"SF{uuid.uuid4().int % 10**12:012d}"
    await given_stock(status.conn, sku, 3)
    await produce(status.conn, ORDERS_SUBMITTED, [(order, encode(submitted(order, sku,
                                                                            paid=True)))])
    await statuses(status, order, "PAID")
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    body = push(number, [("PICKED_UP", "1"), ("IN_TRANSIT", "0")])
    code, answer = await post(status, f"/v1/fulfilment/kuaidi100?order_id={order}", body, form)
    assert (code, answer) == (200, {"result": True, "returnCode": "200", "message": "成功"})
    assert (await statuses(status, order, "IN_TRANSIT"))[-2:] == ["PICKED_UP", "IN_TRANSIT"]

    async def tracked():
        _, view = await get(status, f"/v1/orders/{order}")
        return view if view.get("tracking_number") == number else None

    view = await eventually(tracked)
    assert {e["via"] for e in view["carrier_events"]} == {"callback"}

    # the same order, another parcel's push: refused, whoever replays it
    other = push("SF000000000001", [("DELIVERED", "3")])
    code, answer = await post(status, f"/v1/fulfilment/kuaidi100?order_id={order}", other, form)
    assert (code, answer["returnCode"]) == (409, "409"), answer
    # no order named and no order with that parcel
    code, answer = await post(status, "/v1/fulfilment/kuaidi100", other, form)
    assert code == 404 and "unknown_parcel" in answer["message"]
    # no order named: found by its tracking number
    later = push(number, [("PICKED_UP", "1"), ("IN_TRANSIT", "0"), ("DELIVERED", "3")])
    code, _ = await post(status, "/v1/fulfilment/kuaidi100", later, form)
    assert code == 200
    assert (await statuses(status, order, "DELIVERED"))[-1] == "DELIVERED"
    # signed with another salt
    code, answer = await post(status, "/v1/fulfilment/kuaidi100",
                              push(number, [("DELIVERED", "3")], salt="wrong"), form)
    assert code == 401 and "bad_signature" in answer["message"]
