"""Unpaid holds expire through the real inventory service: released once, stock back."""

from __future__ import annotations

import uuid

import pytest
from support import collect, given_stock, produce, running_system

from shared.codec import encode
from shared.events import ReserveStock
from shared.topics import INVENTORY_COMMANDS, INVENTORY_EVENTS, STOCK_LEVELS

pytestmark = [pytest.mark.e2e, pytest.mark.kafka, pytest.mark.postgres]


@pytest.fixture(scope="module")
def quick_holds(stack_info, broker, tmp_path_factory):
    env = {"ORDERSTREAM_INVENTORY_HOLD_MINUTES": "0.03",  # 1.8 s
           "ORDERSTREAM_INVENTORY_EXPIRY_SCAN_SECONDS": "0.5"}
    with running_system(stack_info, broker, tmp_path_factory.mktemp("holds"), env) as system:
        yield system


async def test_an_unpaid_hold_expires_once_and_its_stock_is_sellable_again(quick_holds):
    conn = quick_holds.conn
    sku, order = f"SKU-{uuid.uuid4().hex[:8]}", f"ord-{uuid.uuid4().hex[:8]}"
    await given_stock(conn, sku, 1)
    reserve = ReserveStock(order_id=order, line=1, sku=sku, quantity=1, correlation_id=order)
    await produce(conn, INVENTORY_COMMANDS, [(sku, encode(reserve))])

    def expired(seen: list[dict]) -> bool:
        return any(e["order_id"] == order and e["event_type"] == "ReservationExpired"
                   for e in seen)

    events = [e for e in await collect(conn, INVENTORY_EVENTS, expired, timeout=60)
              if e["order_id"] == order]
    assert [e["event_type"] for e in events] == ["StockReserved", "ReservationExpired"]

    def sellable_again(seen: list[dict]) -> bool:
        mine = [s for s in seen if s["sku"] == sku]
        return len(mine) >= 3 and mine[-1]["available"] == 1 and mine[-1]["sellable"]

    levels = [s for s in await collect(conn, STOCK_LEVELS, sellable_again) if s["sku"] == sku]
    assert [(s["reserved"], s["available"]) for s in levels] == [(0, 1), (1, 0), (0, 1)]
