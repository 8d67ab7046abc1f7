"""The notifier's pure rules: the projection, triggers, reachable channels, the plan, and the
variables every template gets (the ship-by time in the customer's own zone)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.notifier import domain
from shared.events import (
    Channel,
    Customer,
    OrderLine,
    OrderStatus,
    OrderStatusChanged,
    OrderSubmitted,
)

S = OrderStatus
AT = datetime(2026, 12, 8, 7, 30, tzinfo=UTC)  # 15:30 in Shanghai


def submitted(*, phone: str | None = "13800138000", email: str | None = "li@example.com",
              openid: str | None = "oWx-123456", locale: str = "zh-CN",
              zone: str = "Asia/Shanghai", vip: bool = False, paid: bool = True,
              nickname: str | None = "小李", channel: Channel = Channel.WEB) -> OrderSubmitted:
    return OrderSubmitted(
        event_id="sub-1", order_id="ord-1", channel=channel, channel_order_id="W-1",
        customer=Customer(customer_id="c-1", nickname=nickname, phone=phone, email=email,
                          wechat_openid=openid, locale=locale, time_zone=zone, vip=vip),
        lines=(OrderLine(line=1, sku="FRESH-MILK-1L", quantity=2, unit_price=Decimal("9.9")),
               OrderLine(line=2, sku="TEA-01", quantity=1, unit_price=Decimal("39.9"))),
        currency="CNY", total=Decimal("59.7"), paid=paid, placed_at=AT)


def change(to: OrderStatus, *, at: datetime = AT, detail: str = "",
           frm: OrderStatus | None = None) -> OrderStatusChanged:
    return OrderStatusChanged(
        event_id=f"chg-{to}", order_id="ord-1", channel="web", channel_order_id="W-1",
        customer_id="c-1", from_status=frm, to_status=to, at=at, cause_event_id="x",
        detail=detail, carrier="SF" if to == S.PICKED_UP else None,
        tracking_number="SF1234567890" if to == S.PICKED_UP else None)


def view(**kwargs: object) -> domain.OrderView:
    return domain.view_of(submitted(**kwargs))  # type: ignore[arg-type]


# --- triggers -----------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "trigger"), [
    (S.RESERVED, "confirmation"), (S.PAID, None), (S.PICKED_UP, "shipped"),
    (S.OUT_FOR_DELIVERY, "out_for_delivery"), (S.DELIVERED, "delivered"),
    (S.REJECTED, "rejected"), (S.CANCELLED, "cancelled"), (S.PACKED, None),
    (S.SUBMITTED, None), (S.IN_TRANSIT, None)])
def test_each_status_has_its_trigger(status: OrderStatus, trigger: str | None) -> None:
    assert domain.trigger_for(status, "web", domain.Rules()) == trigger


def test_a_channel_set_to_confirm_once_paid_confirms_on_paid_not_on_reserved() -> None:
    rules = domain.Rules(confirm_on={"web": "paid"})
    assert domain.trigger_for(S.RESERVED, "web", rules) is None
    assert domain.trigger_for(S.PAID, "web", rules) == "confirmation"
    assert domain.trigger_for(S.RESERVED, "tmall", rules) == "confirmation"


def test_a_disabled_trigger_tells_nobody() -> None:
    rules = domain.Rules(enabled=frozenset({"confirmation"}))
    assert domain.trigger_for(S.DELIVERED, "web", rules) is None


# --- channels -----------------------------------------------------------------------------


def test_recipients_normalise_a_chinese_mobile_and_always_include_the_inbox() -> None:
    assert domain.recipients(view()) == {"inapp": "c-1", "sms": "+8613800138000",
                                         "email": "li@example.com", "wechat": "oWx-123456"}


@pytest.mark.parametrize("phone", ["138****8000", "12345", "", None, "+86 138-0013-800x"])
def test_a_masked_or_malformed_phone_reaches_no_one(phone: str | None) -> None:
    assert "sms" not in domain.recipients(view(phone=phone))


def test_an_international_number_is_kept_as_given() -> None:
    assert domain.recipients(view(phone="+44 7700 900123"))["sms"] == "+447700900123"


def test_a_masked_email_reaches_no_one() -> None:
    assert "email" not in domain.recipients(view(email="l***@example.com"))


# --- the plan -----------------------------------------------------------------------------


def test_confirmation_goes_to_every_channel_at_once_and_the_inbox() -> None:
    planned = domain.plan(view(), change(S.RESERVED), domain.Rules())
    assert planned is not None
    assert (planned.policy, planned.chain) == ("all", ("wechat", "sms", "email"))
    assert planned.started == ("wechat", "sms", "email", "inapp")


def test_failover_starts_with_the_first_reachable_channel_only() -> None:
    planned = domain.plan(view(openid=None), change(S.PICKED_UP), domain.Rules())
    assert planned is not None
    assert (planned.chain, planned.started) == (("sms", "email"), ("sms", "inapp"))


def test_a_channel_without_a_provider_is_left_out() -> None:
    rules = domain.Rules(available=frozenset({"email"}))
    planned = domain.plan(view(), change(S.RESERVED), rules)
    assert planned is not None and planned.chain == ("email",)


def test_a_customer_reachable_only_in_app_gets_the_inbox_message_alone() -> None:
    planned = domain.plan(view(phone=None, email=None, openid=None, vip=True),
                          change(S.RESERVED), domain.Rules())
    assert planned is not None
    assert (planned.chain, planned.started, planned.followup_due) == ((), ("inapp",), None)


def test_a_vip_gets_a_follow_up_deadline_from_the_change() -> None:
    planned = domain.plan(view(vip=True), change(S.RESERVED), domain.Rules())
    assert planned is not None and planned.followup_due == AT + timedelta(minutes=30)


def test_ids_come_from_order_status_and_channel() -> None:
    a = domain.plan(view(), change(S.RESERVED), domain.Rules())
    b = domain.plan(view(), change(S.RESERVED), domain.Rules())
    assert a is not None and b is not None and a.notification_id == b.notification_id
    assert domain.message_id("ord-1", S.RESERVED, "sms") != domain.message_id(
        "ord-1", S.RESERVED, "email")


# --- variables ----------------------------------------------------------------------------


@pytest.mark.parametrize(("at", "zone", "locale", "expected"), [
    (datetime(2026, 12, 8, 7, 30, tzinfo=UTC), "Asia/Shanghai", "zh-CN", "今天17:00"),
    (datetime(2026, 12, 8, 8, 30, tzinfo=UTC), "Asia/Shanghai", "zh-CN", "明天17:00"),
    # 01:30 on the 9th in Shanghai, still the 8th in UTC: the customer's day counts
    (datetime(2026, 12, 8, 17, 30, tzinfo=UTC), "Asia/Shanghai", "zh-CN", "今天17:00"),
    (datetime(2026, 12, 8, 7, 30, tzinfo=UTC), "Asia/Shanghai", "en", "today at 17:00"),
    (datetime(2026, 12, 8, 22, 0, tzinfo=UTC), "America/New_York", "en-US",
     "tomorrow at 17:00"),
    (datetime(2026, 12, 8, 7, 30, tzinfo=UTC), "Not/AZone", "zh-CN", "今天17:00"),
])
def test_ship_by_is_worded_in_the_customers_zone_and_language(
        at: datetime, zone: str, locale: str, expected: str) -> None:
    assert domain.ship_by(at, zone, locale, domain.Rules()) == expected


def test_variables_name_items_and_fall_back_to_a_polite_nickname() -> None:
    names = {"FRESH-MILK-1L": "鲜牛奶 1L"}
    got = domain.variables(view(nickname=None), change(S.RESERVED), domain.Rules(), names,
                           ["收到后请冷藏"])
    assert got["nickname"] == "顾客"
    assert got["items"][0] == {"sku": "FRESH-MILK-1L", "name": "鲜牛奶 1L", "quantity": 2}
    assert got["tips"] == ["收到后请冷藏"]
    assert domain.variables(view(nickname=None, locale="en"), change(S.RESERVED),
                            domain.Rules(), {}, [])["nickname"] == "customer"


def test_a_rejection_names_what_ran_out() -> None:
    got = domain.variables(view(), change(S.REJECTED, detail="out of stock: TEA-01, X-2"),
                           domain.Rules(), {"TEA-01": "乌龙茶"}, [])
    assert got["out_of_stock"] == ["乌龙茶", "X-2"]


@pytest.mark.parametrize(("paid", "refund"), [(True, True), (False, False)])
def test_a_cancellation_promises_a_refund_only_when_paid(paid: bool, refund: bool) -> None:
    got = domain.variables(view(paid=paid), change(S.CANCELLED), domain.Rules(), {}, [])
    assert got["refund"] is refund


def test_shipped_carries_carrier_and_tracking_number() -> None:
    got = domain.variables(view(), change(S.PICKED_UP), domain.Rules(), {}, [])
    assert (got["carrier"], got["tracking_number"]) == ("SF", "SF1234567890")


# --- applying inputs ----------------------------------------------------------------------


def test_a_change_before_its_order_waits_then_is_told_when_the_order_comes() -> None:
    waited = domain.on_change(None, change(S.RESERVED))
    assert isinstance(waited.state, domain.Waiting) and waited.told == []
    came = domain.on_submitted(waited.state, submitted())
    assert [c.to_status for _, c in came.told] == [S.RESERVED]
    assert isinstance(came.state, domain.OrderView) and came.state.told == ("RESERVED",)


def test_a_replayed_change_or_submission_tells_nothing_twice() -> None:
    first = domain.on_submitted(None, submitted())
    told = domain.on_change(first.state, change(S.RESERVED))
    again = domain.on_change(told.state, change(S.RESERVED))
    assert again.told == [] and again.state is told.state
    assert domain.on_submitted(told.state, submitted()).state is told.state


def test_a_payment_seen_on_the_status_stream_makes_the_order_paid() -> None:
    unpaid = domain.on_submitted(None, submitted(paid=False)).state
    paid = domain.on_change(unpaid, change(S.PAID)).state
    assert isinstance(paid, domain.OrderView) and paid.paid


def test_too_many_waiting_changes_are_refused() -> None:
    state: domain.State | None = None
    for n in range(3):
        state = domain.on_change(state, change(S.RESERVED).model_copy(
            update={"event_id": f"e{n}"})).state
    with pytest.raises(ValueError, match="waiting"):
        domain.on_change(state, change(S.PAID), max_waiting=3)


def test_state_round_trips_through_json() -> None:
    waiting = domain.on_change(None, change(S.RESERVED)).state
    known = domain.on_submitted(waiting, submitted()).state
    for state in (waiting, known):
        assert domain.load_state(state.model_dump(mode="json")) == state  # type: ignore[union-attr]


_PATH = [S.RESERVED, S.PAID, S.PICKED_UP, S.OUT_FOR_DELIVERY, S.DELIVERED]


@given(st.integers(min_value=0, max_value=len(_PATH)), st.integers(min_value=0, max_value=3))
def test_whatever_the_interleaving_every_change_is_told_once_in_order(
        submission_at: int, replays: int) -> None:
    """orders.submitted and orders.status have no order between them: the submission may
    come anywhere among the changes, and any change may be redelivered."""
    changes = [change(s) for s in _PATH]
    inputs: list[object] = [*changes[:submission_at], submitted(), *changes[submission_at:]]
    inputs += changes[:replays]
    state: domain.State | None = None
    told: list[OrderStatus] = []
    for item in inputs:
        outcome = (domain.on_submitted(state, item) if isinstance(item, OrderSubmitted)
                   else domain.on_change(state, item))  # type: ignore[arg-type]
        state = outcome.state
        told += [c.to_status for _, c in outcome.told]
    assert told == _PATH
