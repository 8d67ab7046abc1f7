"""Ingestion turns a `web` channel payload into one OrderSubmitted, or says precisely why not."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from pydantic import ValidationError

from services.ingestion.channels import ADAPTERS, web
from services.ingestion.domain import (
    channel_of,
    dedupe_key,
    normalise,
    order_id_for,
    to_submitted,
)
from shared.codec import InvalidRecord
from shared.events import Channel, OrderSubmitted

SHANGHAI = "Asia/Shanghai"
ZONES = ["Asia/Shanghai", "UTC", "America/New_York", "Europe/Berlin", "Pacific/Chatham"]


# --- factories ---------------------------------------------------------------------------


def web_line(sku: str = "SKU-1001", quantity: Any = 1, unit_price: Any = "9.90") -> dict[str, Any]:
    return {"sku": sku, "quantity": quantity, "unit_price": unit_price}


def web_payload(**overrides: Any) -> dict[str, Any]:
    """A valid `web` order; keyword arguments replace top-level fields."""
    payload: dict[str, Any] = {
        "order_id": "W-20260120-0001",
        "placed_at": "2026-01-20T00:30:00",
        "currency": "CNY",
        "customer": {"id": "cust-42", "nickname": "lilei", "email": "li@example.com",
                     "phone": "13800138000", "locale": "zh-CN", "time_zone": SHANGHAI,
                     "vip": True},
        "lines": [web_line("SKU-1001", 2, "19.90"), web_line("SKU-2002", 1, "5.00")],
        "paid": True,
    }
    payload.update(overrides)
    return payload


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def reason_of(call: Any) -> str:
    with pytest.raises(InvalidRecord) as info:
        call()
    return info.value.reason


# --- the valid path ----------------------------------------------------------------------


def test_valid_web_payload_yields_an_order_submitted_with_every_field_carried_over() -> None:
    order = normalise("web", web_payload(), zone=SHANGHAI)

    assert isinstance(order, OrderSubmitted)
    assert order.channel is Channel.WEB
    assert order.channel_order_id == "W-20260120-0001"
    assert order.order_id == order_id_for("web", "W-20260120-0001")
    assert order.correlation_id == order.order_id
    assert order.currency == "CNY"
    assert order.paid is True
    c = order.customer
    assert (c.customer_id, c.nickname, c.email, c.phone, c.locale, c.time_zone, c.vip) == (
        "cust-42", "lilei", "li@example.com", "13800138000", "zh-CN", SHANGHAI, True)
    assert [(ln.line, ln.sku, ln.quantity, ln.unit_price) for ln in order.lines] == [
        (1, "SKU-1001", 2, Decimal("19.90")), (2, "SKU-2002", 1, Decimal("5.00"))]
    assert order.total == Decimal("44.80")


def test_minimal_payload_gets_the_documented_defaults() -> None:
    payload = web_payload(customer={"id": "c-1"})
    del payload["paid"]
    order = normalise("web", payload, zone=SHANGHAI)
    assert order.paid is False
    assert order.customer.locale == "zh-CN"
    assert order.customer.time_zone == "Asia/Shanghai"
    assert order.customer.vip is False
    assert order.customer.nickname is None


def test_naive_placed_at_is_read_in_the_channel_zone_and_stored_in_utc() -> None:
    order = normalise("web", web_payload(placed_at="2026-01-20T00:30:00"), zone=SHANGHAI)
    assert order.placed_at == utc(2026, 1, 19, 16, 30)
    assert order.placed_at.tzinfo is UTC


@pytest.mark.parametrize("zone", ZONES)
def test_aware_placed_at_is_converted_to_utc_whatever_the_channel_zone(zone: str) -> None:
    order = normalise("web", web_payload(placed_at="2026-01-20T00:30:00+08:00"), zone=zone)
    assert order.placed_at == utc(2026, 1, 19, 16, 30)
    assert order.placed_at.tzinfo is UTC


def test_naive_local_and_aware_forms_of_one_instant_yield_the_same_placed_at() -> None:
    forms = ["2026-01-20T00:30:00", "2026-01-20T00:30:00+08:00", "2026-01-19T16:30:00Z",
             "2026-01-19T11:30:00-05:00"]
    placed = {normalise("web", web_payload(placed_at=f), zone=SHANGHAI).placed_at for f in forms}
    assert placed == {utc(2026, 1, 19, 16, 30)}


def test_naive_placed_at_depends_on_the_channel_zone() -> None:
    at_utc = normalise("web", web_payload(), zone="UTC").placed_at
    at_shanghai = normalise("web", web_payload(), zone=SHANGHAI).placed_at
    assert at_utc - at_shanghai == timedelta(hours=8)


def test_same_channel_order_yields_the_same_order_id_and_event_id_on_every_normalisation() -> None:
    first = normalise("web", web_payload(), zone=SHANGHAI)
    # A re-sent order (even with other details changed) is the same order, the same event.
    again = normalise("web", web_payload(paid=False, currency="USD",
                                         placed_at="2026-02-01T10:00:00"), zone="UTC")
    assert (again.order_id, again.event_id) == (first.order_id, first.event_id)


def test_different_channel_orders_get_different_ids() -> None:
    a = normalise("web", web_payload(order_id="W-1"), zone=SHANGHAI)
    b = normalise("web", web_payload(order_id="W-2"), zone=SHANGHAI)
    assert a.order_id != b.order_id
    assert a.event_id != b.event_id
    assert a.event_id != a.order_id


def test_order_id_is_per_channel_so_equal_channel_order_ids_do_not_collide() -> None:
    ids = {order_id_for(ch.value, "X-1") for ch in Channel}
    assert len(ids) == len(Channel)
    assert order_id_for("web", "X-1") == order_id_for(Channel.WEB, "X-1")


def test_dedupe_key_is_channel_colon_channel_order_id() -> None:
    assert dedupe_key("web", "W-1") == "web:W-1"


def test_lines_are_numbered_from_one_in_payload_order() -> None:
    skus = [f"SKU-{i}" for i in range(7)]
    order = normalise("web", web_payload(lines=[web_line(s) for s in skus]), zone=SHANGHAI)
    assert [(ln.line, ln.sku) for ln in order.lines] == list(enumerate(skus, start=1))


def test_total_is_the_exact_decimal_sum_of_quantity_times_unit_price() -> None:
    lines = [web_line("A", 3, "0.1"), web_line("B", 7, "19.99"), web_line("C", 1, "0.0001"),
             web_line("D", 1000, "0.3333")]
    order = normalise("web", web_payload(lines=lines), zone=SHANGHAI)
    assert order.total == Decimal("0.3") + Decimal("139.93") + Decimal("0.0001") + Decimal("333.3")
    assert order.total == Decimal("473.5301")
    assert isinstance(order.total, Decimal)


@given(st.lists(
    st.tuples(st.integers(1, 10_000),
              st.decimals(min_value=0, max_value=Decimal("99999.9999"), places=4,
                          allow_nan=False, allow_infinity=False)),
    min_size=1, max_size=20,
))
def test_total_equals_sum_of_lines_for_any_quantities_and_prices(
    items: list[tuple[int, Decimal]],
) -> None:
    lines = [web_line(f"SKU-{i}", q, str(p)) for i, (q, p) in enumerate(items)]
    order = normalise("web", web_payload(lines=lines), zone=SHANGHAI)
    assert order.total == sum((q * p for q, p in items), Decimal(0))
    assert [ln.line for ln in order.lines] == list(range(1, len(items) + 1))


# --- invalid payloads --------------------------------------------------------------------


def with_line(**line: Any) -> dict[str, Any]:
    return web_payload(lines=[web_line() | line])


def with_customer(**fields: Any) -> dict[str, Any]:
    return web_payload(customer={"id": "c-1"} | fields)


def without(field: str) -> dict[str, Any]:
    payload = web_payload()
    del payload[field]
    return payload


INVALID = {
    "zero_quantity": with_line(quantity=0),
    "negative_quantity": with_line(quantity=-1),
    "fractional_quantity": with_line(quantity=1.5),
    "no_lines": web_payload(lines=[]),
    "lines_not_a_list": web_payload(lines={"sku": "A"}),
    "too_many_lines": web_payload(lines=[web_line(f"S-{i}") for i in range(501)]),
    "negative_price": with_line(unit_price="-0.01"),
    "price_with_five_decimals": with_line(unit_price="1.00001"),
    "price_not_a_number": with_line(unit_price="free"),
    "lowercase_currency": web_payload(currency="cny"),
    "two_letter_currency": web_payload(currency="CN"),
    "four_letter_currency": web_payload(currency="CNYY"),
    "numeric_currency": web_payload(currency="156"),
    "unknown_top_level_field": web_payload(coupon="SPRING"),
    "unknown_line_field": with_line(discount="1.00"),
    "unknown_customer_field": with_customer(address="Beijing"),
    "empty_sku": with_line(sku=""),
    "sku_with_space": with_line(sku="SKU 1"),
    "sku_starting_with_dash": with_line(sku="-SKU"),
    "sku_too_long": with_line(sku="S" * 65),
    "sku_non_ascii": with_line(sku="商品1"),
    "missing_order_id": without("order_id"),
    "missing_placed_at": without("placed_at"),
    "missing_currency": without("currency"),
    "missing_customer": without("customer"),
    "missing_lines": without("lines"),
    "bad_order_id_characters": web_payload(order_id="W 1/2"),
    "order_id_too_long": web_payload(order_id="W" * 65),
    "placed_at_not_a_time": web_payload(placed_at="yesterday"),
    "empty_customer_id": with_customer(id=""),
    "customer_locale_too_long_for_the_event": with_customer(locale="x" * 17),
    "payload_not_an_object": ["order"],
    "payload_null": None,
}


@pytest.mark.parametrize("payload", list(INVALID.values()), ids=list(INVALID))
def test_invalid_web_payload_raises_validation_error(payload: Any) -> None:
    with pytest.raises(ValidationError):
        normalise("web", payload, zone=SHANGHAI)


def test_normalise_web_is_the_adapter_normalise_uses_for_web() -> None:
    direct = to_submitted(web.normalise(web_payload(), zone=SHANGHAI))
    dispatched = normalise("web", web_payload(), zone=SHANGHAI)
    assert direct.model_dump(exclude={"occurred_at"}) == dispatched.model_dump(
        exclude={"occurred_at"})


@pytest.mark.parametrize("placed_at", [
    "0001-01-01T00:00:00",            # naive, read in UTC+8: before year 1 in UTC
    "0001-01-01T00:00:00+01:00",      # aware, before year 1 in UTC
    "9999-12-31T23:59:59-01:00",      # aware, after year 9999 in UTC
])
def test_placed_at_with_no_utc_instant_is_a_validation_error(placed_at: str) -> None:
    # The adapter promises a pydantic ValidationError for an invalid payload (the DLQ
    # reason is then invalid_event); an out-of-range instant must not escape as a bare
    # ValueError from the time-zone conversion.
    with pytest.raises(ValidationError):
        normalise("web", web_payload(placed_at=placed_at), zone=SHANGHAI)


# --- channels ----------------------------------------------------------------------------


def test_every_channel_has_an_adapter() -> None:
    assert set(ADAPTERS) == {c.value for c in Channel}


@pytest.mark.parametrize("channel", ["", "WEB", "amazon"])
def test_unknown_channel_string_is_rejected_as_unknown_channel(channel: str) -> None:
    reason = reason_of(lambda: normalise(channel, web_payload(), zone=SHANGHAI))
    assert reason == "unknown_channel"


@pytest.mark.parametrize("channel", [c.value for c in Channel])
def test_channel_of_reads_the_channel_header(channel: str) -> None:
    assert channel_of({"channel": channel}, None) == channel


@pytest.mark.parametrize("channel", [c.value for c in Channel])
def test_channel_of_falls_back_to_the_key_prefix(channel: str) -> None:
    assert channel_of({}, f"{channel}:ORDER-1") == channel
    assert channel_of({"channel": ""}, f"{channel}:A:B") == channel


def test_channel_of_prefers_the_header_over_the_key_prefix() -> None:
    assert channel_of({"channel": "jd"}, "web:W-1") == "jd"


def test_channel_of_does_not_fall_back_to_the_key_when_the_header_is_unknown() -> None:
    assert reason_of(lambda: channel_of({"channel": "amazon"}, "web:W-1")) == "unknown_channel"


@pytest.mark.parametrize(("headers", "key"), [
    ({}, "amazon:1"), ({"channel": "WEB"}, None), ({"channel": "web "}, None), ({}, "Web:1"),
])
def test_channel_of_rejects_an_unknown_channel(headers: dict[str, str], key: str | None) -> None:
    assert reason_of(lambda: channel_of(headers, key)) == "unknown_channel"


@pytest.mark.parametrize(("headers", "key"), [
    ({}, None), ({}, ""), ({}, "web"), ({}, ":W-1"), ({"channel": ""}, None),
    ({"other": "web"}, "W-1"),
])
def test_channel_of_without_header_or_key_prefix_is_missing_channel(
    headers: dict[str, str], key: str | None,
) -> None:
    assert reason_of(lambda: channel_of(headers, key)) == "missing_channel"


# --- properties: nothing but an order or a named rejection -------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20)
    | st.floats(allow_nan=True, allow_infinity=True),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner,
                                                                max_size=5),
    max_leaves=25,
)


def outcome_of(channel: str, payload: Any, zone: str) -> OrderSubmitted | Exception:
    try:
        return normalise(channel, payload, zone=zone)
    except (ValidationError, InvalidRecord) as exc:
        return exc


@given(payload=json_values, zone=st.sampled_from(ZONES))
def test_arbitrary_json_is_either_an_order_or_a_validation_error(payload: Any, zone: str) -> None:
    result = outcome_of("web", payload, zone)
    assert isinstance(result, OrderSubmitted | ValidationError | InvalidRecord)


@given(payload=json_values, channel=st.sampled_from([c.value for c in Channel] + ["x"]))
def test_arbitrary_json_on_any_channel_is_an_order_or_a_named_rejection(
    payload: Any, channel: str,
) -> None:
    result = outcome_of(channel, payload, "UTC")
    assert isinstance(result, OrderSubmitted | ValidationError | InvalidRecord)
    if channel not in ADAPTERS:
        assert isinstance(result, InvalidRecord)
        assert result.reason == "unknown_channel"


offsets = st.integers(-23 * 60 - 59, 23 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m)))
timestamps = (
    st.datetimes().map(lambda d: d.isoformat())
    | st.builds(lambda d, tz: d.replace(tzinfo=tz).isoformat(), st.datetimes(), offsets)
)
# Field paths in a valid payload, and what may be put there.
MUTATIONS = st.one_of(
    st.tuples(st.just(("placed_at",)), timestamps),
    st.tuples(st.sampled_from([("order_id",), ("placed_at",), ("currency",), ("customer",),
                               ("lines",), ("paid",), ("customer", "id"),
                               ("customer", "locale"), ("customer", "time_zone"),
                               ("customer", "email"), ("lines", 0), ("lines", 0, "sku"),
                               ("lines", 0, "quantity"), ("lines", 0, "unit_price")]),
              json_values),
)


def mutated(mutations: list[tuple[tuple[Any, ...], Any]]) -> dict[str, Any]:
    """A valid payload with each (path, value) applied in turn; a path a previous mutation
    made untraversable is skipped."""
    payload = copy.deepcopy(web_payload())
    for path, value in mutations:
        target: Any = payload
        try:
            for part in path[:-1]:
                target = target[part]
            target[path[-1]] = value
        except (KeyError, IndexError, TypeError):
            continue
    return payload


@given(mutations=st.lists(MUTATIONS, min_size=1, max_size=3), zone=st.sampled_from(ZONES))
@example(mutations=[(("placed_at",), "0001-01-01T00:00:00")], zone=SHANGHAI)
def test_nearly_valid_payload_is_either_an_order_or_a_validation_error(
    mutations: list[tuple[tuple[Any, ...], Any]], zone: str,
) -> None:
    result = outcome_of("web", mutated(mutations), zone)
    assert isinstance(result, OrderSubmitted | ValidationError | InvalidRecord)
    if isinstance(result, OrderSubmitted):
        assert result.placed_at.tzinfo is UTC
