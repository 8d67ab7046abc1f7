"""The codec turns every bad record into an InvalidRecord whose reason the DLQ can carry."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared import codec
from shared import events as ev
from shared.topics import TOPICS

TYPED_TOPICS = sorted(name for name, spec in TOPICS.items() if spec.typed)
SECRET = "13800138000-SECRET"


def payment_confirmed(**overrides: Any) -> dict[str, Any]:
    event = ev.PaymentConfirmed(
        order_id="ord-1", amount="12.50", currency="CNY",
        occurred_at=datetime(2026, 1, 20, 8, 0, tzinfo=UTC),
    )
    return json.loads(codec.encode(event)) | overrides


def status_changed(**overrides: Any) -> dict[str, Any]:
    event = ev.OrderStatusChanged(
        order_id="ord-1", channel=ev.Channel.JD, channel_order_id="JD-1", customer_id="c-1",
        from_status=ev.OrderStatus.PAID, to_status=ev.OrderStatus.PACKED,
        at=datetime(2026, 1, 20, 8, 0, tzinfo=UTC), cause_event_id="e-1",
    )
    return json.loads(codec.encode(event)) | overrides


def rejection(topic: str, data: bytes | None) -> codec.InvalidRecord:
    with pytest.raises(codec.InvalidRecord) as info:
        codec.decode(topic, data)
    return info.value


def as_bytes(payload: Any) -> bytes:
    return json.dumps(payload).encode()


def test_valid_record_decodes() -> None:
    decoded = codec.decode("payments.events", as_bytes(payment_confirmed()))
    assert isinstance(decoded, ev.PaymentConfirmed)
    assert decoded.order_id == "ord-1"


def test_encode_writes_compact_utf8_json() -> None:
    customer = ev.Customer(customer_id="c-1", nickname="李雷")
    order = ev.OrderSubmitted(
        order_id="o-1", channel=ev.Channel.TMALL, channel_order_id="T-1", customer=customer,
        lines=[ev.OrderLine(line=1, sku="SKU-1", quantity=1, unit_price="9.90")],
        currency="CNY", total="9.90", placed_at=datetime(2026, 1, 20, tzinfo=UTC),
    )
    data = codec.encode(order)
    assert "李雷".encode() in data
    assert codec.decode("orders.submitted", data) == order


def test_invalid_json_is_rejected_as_invalid_json() -> None:
    err = rejection("payments.events", b'{"event_type": "PaymentConfirmed",')
    assert err.reason == "invalid_json"
    assert err.error


def test_non_utf8_bytes_are_rejected_as_invalid_encoding() -> None:
    err = rejection("payments.events", '{"order_id": "订单"}'.encode("gb18030"))
    assert err.reason == "invalid_encoding"


def test_tombstone_is_rejected_as_empty_value() -> None:
    assert rejection("orders.status", None).reason == "empty_value"


def test_empty_bytes_are_rejected_as_invalid_json() -> None:
    assert rejection("orders.status", b"").reason == "invalid_json"


@pytest.mark.parametrize("payload", [[], [payment_confirmed()], "text", 42, None, True])
def test_json_that_is_not_an_object_is_rejected_as_invalid_event(payload: Any) -> None:
    err = rejection("payments.events", as_bytes(payload))
    assert err.reason == "invalid_event"
    assert "expected a JSON object" in err.error


def test_unknown_event_type_on_a_multi_type_topic_is_rejected() -> None:
    err = rejection("payments.events", as_bytes(payment_confirmed(event_type="PaymentRefunded")))
    assert err.reason == "unknown_event_type"
    assert "PaymentRefunded" in err.error and "payments.events" in err.error


def test_missing_event_type_on_a_multi_type_topic_is_rejected_as_unknown() -> None:
    payload = payment_confirmed()
    del payload["event_type"]
    assert rejection("payments.events", as_bytes(payload)).reason == "unknown_event_type"


def test_event_of_another_topic_is_rejected_as_unknown_event_type() -> None:
    payload = payment_confirmed(event_type="ReserveStock")
    assert rejection("payments.events", as_bytes(payload)).reason == "unknown_event_type"


def test_wrong_event_type_on_a_single_type_topic_is_an_invalid_event() -> None:
    err = rejection("orders.status", as_bytes(status_changed(event_type="Alert")))
    assert err.reason == "invalid_event"
    assert [e["loc"] for e in err.field_errors] == ["event_type"]


def test_missing_field_is_an_invalid_event_naming_its_location() -> None:
    payload = status_changed()
    del payload["cause_event_id"]
    err = rejection("orders.status", as_bytes(payload))
    assert err.reason == "invalid_event"
    assert err.field_errors == ({"loc": "cause_event_id", "msg": "Field required",
                                 "type": "missing"},)


def test_missing_field_on_a_multi_type_topic_names_the_event_type_and_field() -> None:
    payload = payment_confirmed()
    del payload["order_id"]
    err = rejection("payments.events", as_bytes(payload))
    assert err.reason == "invalid_event"
    assert [(e["loc"], e["type"]) for e in err.field_errors] == [
        ("PaymentConfirmed.order_id", "missing")
    ]


def test_missing_nested_field_location_is_dotted() -> None:
    order = {
        "event_type": "OrderSubmitted", "order_id": "o-1", "channel": "web",
        "channel_order_id": "W-1", "customer": {"nickname": "x"},
        "lines": [{"line": 1, "sku": "SKU-1", "unit_price": "1"}], "currency": "CNY",
        "total": "1", "placed_at": "2026-01-20T08:00:00Z",
    }
    err = rejection("orders.submitted", as_bytes(order))
    missing = {e["loc"] for e in err.field_errors if e["type"] == "missing"}
    assert missing == {"customer.customer_id", "lines.0.quantity"}


def test_field_errors_do_not_echo_the_input() -> None:
    payload = status_changed(customer_id={"phone": SECRET}, detail=SECRET * 40, to_status=SECRET)
    err = rejection("orders.status", as_bytes(payload))
    assert {e["loc"] for e in err.field_errors} == {"customer_id", "detail", "to_status"}
    for error in err.field_errors:
        assert set(error) == {"loc", "msg", "type"}
    assert SECRET not in json.dumps(err.field_errors)
    assert SECRET not in err.error and SECRET not in str(err)


def test_field_errors_are_json_serialisable() -> None:
    err = rejection("payments.events", as_bytes(payment_confirmed(amount="-1", currency=7)))
    assert json.loads(json.dumps(err.field_errors)) == list(err.field_errors)


def test_invalid_record_is_a_value_error_with_its_reason_in_the_message() -> None:
    err = codec.InvalidRecord("wrong_key", "key must be the SKU")
    assert isinstance(err, ValueError)
    assert str(err) == "wrong_key: key must be the SKU"
    assert err.field_errors == ()


def test_parse_json_returns_any_json_value_for_untyped_topics() -> None:
    assert codec.parse_json(b'{"tid": "123", "items": [1, 2]}') == {"tid": "123", "items": [1, 2]}
    assert codec.parse_json(b"[]") == []


@pytest.mark.parametrize(("data", "reason"), [
    (None, "empty_value"), (b"{", "invalid_json"), (b"\xff{}", "invalid_encoding"),
])
def test_parse_json_rejections_carry_a_reason(data: bytes | None, reason: str) -> None:
    with pytest.raises(codec.InvalidRecord) as info:
        codec.parse_json(data)
    assert info.value.reason == reason


# --- properties: a bad record is always an InvalidRecord, never a crash ----------------------

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=10,
)


def assert_decodes_or_is_rejected(topic: str, data: bytes) -> None:
    try:
        decoded = codec.decode(topic, data)
    except codec.InvalidRecord as exc:
        assert exc.reason
        assert exc.error
    else:
        assert type(decoded) in TOPICS[topic].events


@given(topic=st.sampled_from(TYPED_TOPICS), data=st.binary(max_size=256))
def test_arbitrary_bytes_decode_or_raise_invalid_record(topic: str, data: bytes) -> None:
    assert_decodes_or_is_rejected(topic, data)


@given(topic=st.sampled_from(TYPED_TOPICS), payload=json_values)
def test_arbitrary_json_decodes_or_raises_invalid_record(topic: str, payload: Any) -> None:
    assert_decodes_or_is_rejected(topic, json.dumps(payload).encode())


@given(
    field=st.sampled_from(sorted(status_changed())),
    value=json_values,
    drop=st.booleans(),
)
def test_a_corrupted_field_decodes_or_raises_invalid_record(
    field: str, value: Any, drop: bool
) -> None:
    payload = status_changed()
    if drop:
        del payload[field]
    else:
        payload[field] = value
    assert_decodes_or_is_rejected("orders.status", json.dumps(payload).encode())


# --- edge cases found by review: deep nesting, unhashable types, calendar ends ---------


@pytest.mark.parametrize("event_type", [[], {}])
def test_unhashable_event_type_on_a_multi_type_topic_is_rejected(event_type: Any) -> None:
    payload = payment_confirmed(event_type=event_type)
    assert rejection("payments.events", as_bytes(payload)).reason == "unknown_event_type"


def test_deeply_nested_json_is_rejected_as_invalid_json() -> None:
    assert rejection("orders.status", b"[" * 100_000).reason == "invalid_json"


@pytest.mark.parametrize("stamp", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_occurred_at_outside_the_utc_calendar_is_an_invalid_event(stamp: str) -> None:
    err = rejection("orders.status", as_bytes(status_changed(occurred_at=stamp)))
    assert err.reason == "invalid_event"
