"""Status's handler, driven with a dict for its order table: the saga's commands and status
changes go out keyed right, duplicates do nothing, and each decision is one row to write."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from prometheus_client import CollectorRegistry

from services.status import domain
from services.status.agents import TrackHandler, decode_state, encode_state
from services.status.metrics import StatusMetrics
from services.status.settings import DEFAULT_STALE_AFTER
from shared.batchloop import Effects
from shared.events import (
    Channel,
    Customer,
    OrderLine,
    OrderStatus,
    OrderStatusChanged,
    OrderSubmitted,
    Packed,
    StockReserved,
    derive_id,
)
from shared.policy import Record
from shared.topics import (
    FULFILMENT_EVENTS,
    INVENTORY_COMMANDS,
    INVENTORY_EVENTS,
    ORDERS_STATUS,
    ORDERS_SUBMITTED,
)

T0 = datetime(2026, 1, 20, 8, tzinfo=UTC)
ORDER = "ord-1"


def handler() -> TrackHandler:
    return TrackHandler(timedelta(minutes=10), DEFAULT_STALE_AFTER,
                        StatusMetrics(CollectorRegistry()), lambda: T0)


def submitted() -> OrderSubmitted:
    return OrderSubmitted(
        event_id=derive_id("submitted", "web", ORDER), occurred_at=T0, correlation_id=ORDER,
        order_id=ORDER, channel=Channel.WEB, channel_order_id="W-1",
        customer=Customer(customer_id="cust-1"), currency="CNY", total=Decimal("20"),
        paid=False, placed_at=T0,
        lines=(OrderLine(line=1, sku="SKU-A", quantity=1, unit_price=Decimal("10")),
               OrderLine(line=2, sku="SKU-B", quantity=1, unit_price=Decimal("10"))))


def reserved(line: int, sku: str) -> StockReserved:
    return StockReserved(event_id=derive_id("reserved", ORDER, line), occurred_at=T0,
                         correlation_id=ORDER, order_id=ORDER, line=line, sku=sku, quantity=1,
                         hold_until=T0 + timedelta(minutes=30))


def record(topic: str, event, offset: int = 0) -> Record:
    return Record(topic=topic, key=ORDER, value=event, headers={}, partition=0, offset=offset,
                  raw=None)


def handle(h: TrackHandler, rec: Record, table: dict) -> Effects:
    effects = Effects()
    h.handle(rec, table, effects)
    return effects


def test_a_submitted_order_sends_one_reserve_per_line_keyed_by_sku_and_its_status() -> None:
    table: dict = {}
    effects = handle(handler(), record(ORDERS_SUBMITTED, submitted()), table)
    commands = [(o.topic, o.key) for o, _ in effects.out if o.topic == INVENTORY_COMMANDS]
    assert commands == [(INVENTORY_COMMANDS, b"SKU-A"), (INVENTORY_COMMANDS, b"SKU-B")]
    changes = [OrderStatusChanged.model_validate_json(o.value) for o, _ in effects.out
               if o.topic == ORDERS_STATUS]
    assert [c.to_status for c in changes] == [OrderStatus.SUBMITTED]
    ((written,),) = [effects.rows]
    assert written.created and written.state is table[ORDER]
    assert table[ORDER].status == OrderStatus.SUBMITTED


def test_every_line_held_makes_it_reserved_and_a_redelivery_does_nothing() -> None:
    h, table = handler(), {}
    handle(h, record(ORDERS_SUBMITTED, submitted()), table)
    handle(h, record(INVENTORY_EVENTS, reserved(1, "SKU-A"), 1), table)
    last = handle(h, record(INVENTORY_EVENTS, reserved(2, "SKU-B"), 2), table)
    assert [OrderStatusChanged.model_validate_json(o.value).to_status
            for o, _ in last.out] == [OrderStatus.RESERVED]
    again = handle(h, record(INVENTORY_EVENTS, reserved(2, "SKU-B"), 3), table)
    assert (again.out, again.rows) == ([], [])
    assert table[ORDER].status == OrderStatus.RESERVED


def packed() -> Packed:
    return Packed(event_id="packed-1", occurred_at=T0, correlation_id=ORDER, order_id=ORDER,
                  source="wms")


def test_news_before_its_order_waits_in_the_table() -> None:
    h, table = handler(), {}
    effects = handle(h, record(FULFILMENT_EVENTS, packed()), table)
    assert isinstance(table[ORDER], domain.Waiting) and effects.out == []
    ((written,),) = [effects.rows]
    assert written.state is table[ORDER] and not written.created


def test_the_state_survives_its_encoding() -> None:
    h, table = handler(), {}
    handle(h, record(ORDERS_SUBMITTED, submitted()), table)
    assert decode_state(encode_state(table[ORDER])) == table[ORDER]
    waiting: dict = {}
    handle(h, record(FULFILMENT_EVENTS, packed()), waiting)
    assert decode_state(encode_state(waiting[ORDER])) == waiting[ORDER]
