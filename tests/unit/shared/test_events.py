"""Event contracts: every model round-trips through the codec and enforces its invariants."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from shared import codec
from shared import events as ev
from shared.topics import TOPICS

T0 = datetime(2026, 1, 20, 8, 0, tzinfo=UTC)
ORDER = "ord-0001"
SKU = "SKU-1001"

COMMON: dict[str, Any] = {"occurred_at": T0, "correlation_id": ORDER}
INVENTORY_LINE: dict[str, Any] = {"order_id": ORDER, "line": 1, "sku": SKU}
FULFILMENT: dict[str, Any] = {
    "order_id": ORDER, "source": "carrier:sf", "carrier": "SF",
    "tracking_number": "SF1234567890", "location": "Shanghai hub", "scanned_at": T0,
}
NOTIFICATION: dict[str, Any] = {
    "order_id": ORDER, "status": ev.OrderStatus.PAID, "channel": "sms",
    "recipient": "138****0000",
}

#: One valid payload per event type (without the common fields).
SAMPLES: dict[str, dict[str, Any]] = {
    "OrderSubmitted": {
        "order_id": ORDER, "channel": ev.Channel.WEB, "channel_order_id": "W-1",
        "customer": {"customer_id": "c-1", "nickname": "张三", "vip": True},
        "lines": [
            {"line": 1, "sku": SKU, "quantity": 2, "unit_price": Decimal("0.1")},
            {"line": 2, "sku": "SKU-2002", "quantity": 1, "unit_price": Decimal("0.2")},
        ],
        "currency": "CNY", "total": Decimal("0.4"), "paid": True, "placed_at": T0,
    },
    "RejectedMessage": {
        "service": "ingestion", "reason": "invalid_json", "error": "value is not JSON",
        "field_errors": [{"loc": "x", "msg": "m", "type": "t"}], "source_topic": "orders.raw",
        "source_partition": 0, "source_offset": 42, "original_key": "d2ViOjE=",
        "original_value": "e30=", "original_headers": {"channel": "web"},
    },
    "PaymentConfirmed": {
        "order_id": ORDER, "amount": Decimal("19.99"), "currency": "CNY", "payment_ref": "P-1",
    },
    "PaymentFailed": {"order_id": ORDER, "reason": "card_declined"},
    "OrderCancelled": {"order_id": ORDER, "reason": "customer_request", "source": "channel"},
    "ReserveStock": {**INVENTORY_LINE, "quantity": 2, "hold_until": T0 + timedelta(minutes=30)},
    "ConfirmReservation": INVENTORY_LINE,
    "ReleaseReservation": {**INVENTORY_LINE, "reason": "cancelled"},
    "CommitStock": INVENTORY_LINE,
    "ExpireHolds": {"sku": SKU, "due_at": T0},
    "StockAdjusted": {"sku": SKU, "delta": -3, "reason": "damage", "source": "wms"},
    "SafetyStockSet": {"sku": SKU, "threshold": 5, "source": "operator:li"},
    "StockReserved": {**INVENTORY_LINE, "quantity": 2, "hold_until": T0},
    "StockRejected": {
        **INVENTORY_LINE, "quantity": 9, "reason": "insufficient_stock", "available": 3,
    },
    "ReservationReleased": {**INVENTORY_LINE, "quantity": 2, "reason": "cancelled"},
    "ReservationExpired": {**INVENTORY_LINE, "quantity": 2},
    "ReservationConfirmed": INVENTORY_LINE,
    "StockCommitted": {**INVENTORY_LINE, "quantity": 2},
    "StockLevel": {
        "sku": SKU, "on_hand": 10, "reserved": 2, "available": 8, "safety_stock": 1,
        "sellable": True,
    },
    "Packed": FULFILMENT,
    "PickedUp": FULFILMENT,
    "InTransit": FULFILMENT,
    "OutForDelivery": FULFILMENT,
    "Delivered": FULFILMENT,
    "DeliveryException": {**FULFILMENT, "detail": "address not found"},
    "Returned": FULFILMENT,
    "OrderStatusChanged": {
        "order_id": ORDER, "channel": ev.Channel.TMALL, "channel_order_id": "T-1",
        "customer_id": "c-1", "from_status": None, "to_status": ev.OrderStatus.SUBMITTED,
        "at": T0, "cause_event_id": "e-1",
    },
    "NotificationAttempted": {**NOTIFICATION, "attempt": 2},
    "NotificationDelivered": {**NOTIFICATION, "provider_message_id": "m-1"},
    "NotificationFailed": {**NOTIFICATION, "reason": "provider_down", "retryable": True},
    "Alert": {
        "alert_key": "stale:ord-0001", "kind": "stale_order", "severity": ev.Severity.WARNING,
        "subject": "order stuck in PAID", "details": {"minutes": 90, "order_id": ORDER},
    },
}


def make(kind: str, /, **overrides: Any) -> ev.Event:
    """A valid ``kind`` event (an ``ALL_EVENTS`` key), with some fields overridden."""
    return ev.ALL_EVENTS[kind](**{**COMMON, **SAMPLES[kind], **overrides})


def as_json(kind: str, /, **overrides: Any) -> dict[str, Any]:
    """A valid sample as the JSON object a producer would send."""
    return json.loads(codec.encode(make(kind, **overrides)))


CARRIED = [
    (event_type, spec.name)
    for spec in TOPICS.values()
    for event_type, model in ev.ALL_EVENTS.items()
    if model in spec.events
]
MULTI_TYPE_TOPICS = [spec for spec in TOPICS.values() if len(spec.events) > 1]
QUANTITY_FIELDS = [
    (event_type, name)
    for event_type, model in ev.ALL_EVENTS.items()
    for name in ("quantity", "line")
    if name in model.model_fields
]
DATETIME_FIELDS = [
    ("OrderSubmitted", "occurred_at"), ("OrderSubmitted", "placed_at"),
    ("ReserveStock", "hold_until"), ("StockReserved", "hold_until"),
    ("Delivered", "scanned_at"), ("OrderStatusChanged", "at"),
]


def test_every_event_type_has_a_sample() -> None:
    assert set(SAMPLES) == set(ev.ALL_EVENTS)


def test_every_event_type_is_carried_by_a_catalogue_topic() -> None:
    assert {event_type for event_type, _ in CARRIED} == set(ev.ALL_EVENTS)


def test_all_events_is_keyed_by_event_type() -> None:
    for event_type, model in ev.ALL_EVENTS.items():
        assert model.__name__ == event_type
        assert make(event_type).event_type == event_type


@pytest.mark.parametrize(("event_type", "topic"), CARRIED)
def test_event_round_trips_through_codec_on_its_topic(event_type: str, topic: str) -> None:
    event = make(event_type)
    decoded = codec.decode(topic, codec.encode(event))
    assert type(decoded) is type(event)
    assert decoded == event


def test_defaults_fill_event_id_schema_version_and_occurred_at() -> None:
    event = ev.PaymentFailed(order_id=ORDER, reason="x")
    assert event.event_id and event.schema_version == 1 and event.correlation_id == ""
    assert event.occurred_at.tzinfo is UTC
    assert ev.PaymentFailed(order_id=ORDER, reason="x").event_id != event.event_id


# --- time ------------------------------------------------------------------------------------


def test_naive_occurred_at_is_rejected() -> None:
    with pytest.raises(ValidationError) as info:
        make("PaymentFailed", occurred_at=datetime(2026, 1, 20, 8, 0))  # noqa: DTZ001
    assert info.value.errors()[0]["loc"] == ("occurred_at",)


@pytest.mark.parametrize(("event_type", "field"), DATETIME_FIELDS)
def test_every_instant_field_rejects_naive_datetimes(event_type: str, field: str) -> None:
    with pytest.raises(ValidationError):
        make(event_type, **{field: datetime(2026, 1, 20, 8, 0)})  # noqa: DTZ001


def test_naive_occurred_at_in_json_is_rejected_by_decode() -> None:
    payload = as_json("PaymentFailed") | {"occurred_at": "2026-01-20T08:00:00"}
    with pytest.raises(codec.InvalidRecord) as info:
        codec.decode("payments.events", json.dumps(payload).encode())
    assert info.value.reason == "invalid_event"
    assert [e["loc"] for e in info.value.field_errors] == ["PaymentFailed.occurred_at"]


def test_aware_occurred_at_is_converted_to_utc() -> None:
    shanghai = timezone(timedelta(hours=8))
    local = datetime(2026, 1, 20, 16, 0, tzinfo=shanghai)
    event = make("PaymentFailed", occurred_at=local)
    assert event.occurred_at.tzinfo is UTC
    assert event.occurred_at == local
    assert event.occurred_at.replace(tzinfo=None) == datetime(2026, 1, 20, 8, 0)  # noqa: DTZ001


@pytest.mark.parametrize(("event_type", "field"), DATETIME_FIELDS)
def test_every_instant_field_is_normalised_to_utc(event_type: str, field: str) -> None:
    local = datetime(2026, 1, 20, 1, 0, tzinfo=timezone(timedelta(hours=-5)))
    value = getattr(make(event_type, **{field: local}), field)
    assert value.utcoffset() == timedelta(0)
    assert value == local


@given(
    wall=st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2999, 12, 31)),  # noqa: DTZ001
    offset_minutes=st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59),
)
def test_any_fixed_offset_occurred_at_round_trips_to_the_same_utc_instant(
    wall: datetime, offset_minutes: int
) -> None:
    aware = wall.replace(tzinfo=timezone(timedelta(minutes=offset_minutes)))
    event = make("Alert", occurred_at=aware)
    assert event.occurred_at.utcoffset() == timedelta(0)
    assert event.occurred_at == aware
    decoded = codec.decode("ops.alerts", codec.encode(event))
    assert decoded.occurred_at == aware
    assert decoded.occurred_at.utcoffset() == timedelta(0)


# --- shape -----------------------------------------------------------------------------------


def test_unknown_field_is_rejected_extra_forbid() -> None:
    with pytest.raises(ValidationError) as info:
        make("PaymentFailed", coupon="SPRING")
    assert info.value.errors()[0]["type"] == "extra_forbidden"


def test_unknown_field_in_nested_models_is_rejected_extra_forbid() -> None:
    customer = {"customer_id": "c-1", "shoe_size": 42}
    with pytest.raises(ValidationError) as info:
        make("OrderSubmitted", customer=customer)
    assert info.value.errors()[0]["loc"] == ("customer", "shoe_size")


def test_unknown_field_on_the_wire_is_rejected_extra_forbid() -> None:
    payload = as_json("StockLevel") | {"warehouse": "SH-1"}
    with pytest.raises(codec.InvalidRecord) as info:
        codec.decode("stock.levels", json.dumps(payload).encode())
    assert info.value.field_errors == (
        {"loc": "warehouse", "msg": "Extra inputs are not permitted", "type": "extra_forbidden"},
    )


@pytest.mark.parametrize("event_type", sorted(SAMPLES))
def test_events_are_frozen(event_type: str) -> None:
    event = make(event_type)
    with pytest.raises(ValidationError):
        event.correlation_id = "changed"  # type: ignore[misc]
    assert event.correlation_id == ORDER


def test_nested_order_lines_and_customer_are_frozen() -> None:
    order = make("OrderSubmitted")
    assert isinstance(order.lines, tuple)
    with pytest.raises(ValidationError):
        order.lines[0].quantity = 99  # type: ignore[misc]
    with pytest.raises(ValidationError):
        order.customer.vip = False  # type: ignore[misc]


@pytest.mark.parametrize(
    ("event_type", "topic"),
    [(event_type, topic) for event_type, topic in CARRIED
     if len(TOPICS[topic].events) > 1],
)
def test_event_type_discriminates_on_multi_event_topics(event_type: str, topic: str) -> None:
    decoded = codec.decode(topic, json.dumps(as_json(event_type)).encode())
    assert type(decoded) is ev.ALL_EVENTS[event_type]


def test_release_reservation_decodes_as_release_on_inventory_commands() -> None:
    data = json.dumps(as_json("ReleaseReservation")).encode()
    decoded = codec.decode("inventory.commands", data)
    assert isinstance(decoded, ev.ReleaseReservation)
    assert decoded.reason == "cancelled"


def test_multi_event_topics_have_distinct_event_types() -> None:
    for spec in MULTI_TYPE_TOPICS:
        types = [m.model_fields["event_type"].default for m in spec.events]
        assert len(types) == len(set(types)), spec.name


def test_event_type_cannot_be_overridden() -> None:
    with pytest.raises(ValidationError):
        make("ReleaseReservation", event_type="CommitStock")


# --- quantities and money --------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, -1])
@pytest.mark.parametrize(("event_type", "field"), QUANTITY_FIELDS)
def test_non_positive_quantities_and_line_numbers_are_rejected(
    event_type: str, field: str, value: int
) -> None:
    with pytest.raises(ValidationError):
        make(event_type, **{field: value})


@pytest.mark.parametrize("value", [0, -1])
@pytest.mark.parametrize("field", ["quantity", "line"])
def test_non_positive_order_line_quantities_are_rejected(field: str, value: int) -> None:
    line = {"line": 1, "sku": SKU, "quantity": 1, "unit_price": Decimal("1")} | {field: value}
    with pytest.raises(ValidationError):
        make("OrderSubmitted", lines=[line])


def test_order_without_lines_is_rejected() -> None:
    with pytest.raises(ValidationError):
        make("OrderSubmitted", lines=[])


def test_decimal_money_stays_exact_through_json() -> None:
    order = make("OrderSubmitted")
    data = codec.encode(order)
    assert b'"unit_price":"0.1"' in data and b'"total":"0.4"' in data
    decoded = codec.decode("orders.submitted", data)
    assert isinstance(decoded, ev.OrderSubmitted)
    prices = [ln.unit_price for ln in decoded.lines]
    assert prices == [Decimal("0.1"), Decimal("0.2")]
    assert sum(ln.unit_price * ln.quantity for ln in decoded.lines) == decoded.total
    assert prices[0] + prices[1] == Decimal("0.3")
    assert str(codec.decode("payments.events", codec.encode(make("PaymentConfirmed"))).amount) \
        == "19.99"


def test_money_trailing_zeros_survive_json() -> None:
    event = make("PaymentConfirmed", amount=Decimal("0.30"))
    assert str(codec.decode("payments.events", codec.encode(event)).amount) == "0.30"


@pytest.mark.parametrize("amount", [Decimal("-0.01"), Decimal("0.00001"), Decimal("1e14")])
def test_negative_or_over_precise_money_is_rejected(amount: Decimal) -> None:
    with pytest.raises(ValidationError):
        make("PaymentConfirmed", amount=amount)


@pytest.mark.parametrize("currency", ["cny", "RMB1", "YUAN", ""])
def test_currency_must_be_an_iso_4217_code(currency: str) -> None:
    with pytest.raises(ValidationError):
        make("PaymentConfirmed", currency=currency)


@pytest.mark.parametrize("sku", ["", "-leading-dash", "has space", "x" * 65, "SKU|1"])
def test_malformed_sku_is_rejected(sku: str) -> None:
    with pytest.raises(ValidationError):
        make("ReserveStock", sku=sku)


# --- StockAdjusted ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("delta", "absolute"), [(5, None), (-5, None), (None, 0), (None, 120)]
)
def test_stock_adjusted_accepts_exactly_one_of_delta_or_absolute(
    delta: int | None, absolute: int | None
) -> None:
    event = make("StockAdjusted", delta=delta, absolute=absolute)
    assert (event.delta, event.absolute) == (delta, absolute)


@pytest.mark.parametrize(("delta", "absolute"), [(None, None), (5, 10), (-1, 0)])
def test_stock_adjusted_rejects_both_or_neither_of_delta_and_absolute(
    delta: int | None, absolute: int | None
) -> None:
    with pytest.raises(ValidationError, match="exactly one of delta or absolute"):
        make("StockAdjusted", delta=delta, absolute=absolute)


def test_stock_adjusted_rejects_zero_delta() -> None:
    with pytest.raises(ValidationError, match="delta must not be zero"):
        make("StockAdjusted", delta=0)


def test_stock_adjusted_rejects_negative_absolute_count() -> None:
    with pytest.raises(ValidationError):
        make("StockAdjusted", delta=None, absolute=-1)


# --- ids -------------------------------------------------------------------------------------


def test_derive_id_is_deterministic() -> None:
    assert ev.derive_id("reserve", ORDER, 1) == ev.derive_id("reserve", ORDER, 1)
    assert ev.derive_id("order", ev.Channel.WEB, "W-1") == ev.derive_id("order", "web", "W-1")


@given(st.lists(st.one_of(st.text(), st.integers()), min_size=1, max_size=4))
def test_derive_id_is_the_uuid5_of_the_joined_parts(parts: list[object]) -> None:
    # The hand-rolled hash must stay byte-identical to uuid5: ids already on the wire
    # (ledger movement ids, answer event ids) are compared with new ones on replay.
    expected = uuid.uuid5(ev.EVENT_NAMESPACE, "|".join(str(p) for p in parts))
    assert ev.derive_id(*parts) == str(expected)
    assert uuid.UUID(ev.derive_id(*parts)).version == 5


def test_derive_id_differs_for_different_parts() -> None:
    ids = {
        ev.derive_id("reserve", ORDER, 1),
        ev.derive_id("reserve", ORDER, 2),
        ev.derive_id("release", ORDER, 1),
        ev.derive_id(ORDER, "reserve", 1),
        ev.derive_id("reserve", ORDER),
    }
    assert len(ids) == 5


def test_derive_id_fits_the_event_id_field() -> None:
    event = make("PaymentFailed", event_id=ev.derive_id("pay", ORDER))
    assert len(event.event_id) == 36


@given(parts=st.lists(st.text(), max_size=4))
def test_derive_id_is_stable_and_changes_when_a_part_is_added(parts: list[str]) -> None:
    assert ev.derive_id(*parts) == ev.derive_id(*[str(p) for p in parts])
    assert ev.derive_id(*parts) != ev.derive_id(*parts, "extra")
