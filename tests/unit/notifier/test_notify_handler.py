"""Notifier's handler, driven with a dict for its table and the shipped templates: a change
customers hear about becomes one notification row, its first deliveries, an inbox message
and one in-app outcome; a change before its order waits; a replay writes the same ids."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from services.notifier import domain
from services.notifier.agents import NotifyHandler, catalogue_words
from services.notifier.metrics import NotifierMetrics
from services.notifier.store import PlanRow
from services.notifier.templates import load_catalogue
from shared.batchloop import Effects
from shared.events import (
    Customer,
    NotificationDelivered,
    OrderLine,
    OrderStatus,
    OrderStatusChanged,
    OrderSubmitted,
)
from shared.policy import Record
from shared.topics import NOTIFICATIONS_OUTCOMES, ORDERS_STATUS, ORDERS_SUBMITTED

AT = datetime(2026, 12, 12, 2, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def catalogue() -> Any:
    return load_catalogue()


def handler(catalogue: Any, **rules: Any) -> NotifyHandler:
    return NotifyHandler(domain.Rules(**rules), catalogue, catalogue_words,
                         NotifierMetrics(CollectorRegistry()))


def order(*, locale: str = "zh-CN", phone: str | None = "13800138000") -> Record:
    event = OrderSubmitted(
        event_id="sub-1", order_id="ord-1", channel="web", channel_order_id="W-1",
        customer=Customer(customer_id="customer-1", nickname="小王", phone=phone,
                          email="wang@example.com", wechat_openid="oWx-123456",
                          locale=locale),
        lines=(OrderLine(line=1, sku="TEA-LJ-250G", quantity=1, unit_price=Decimal("99")),),
        currency="CNY", total=Decimal("99"), paid=True, placed_at=AT)
    return Record(ORDERS_SUBMITTED, "ord-1", event, {}, 0, 0, None)


def change(to: OrderStatus) -> Record:
    event = OrderStatusChanged(
        event_id=f"chg-{to}", order_id="ord-1", correlation_id="ord-1",
        from_status=OrderStatus.SUBMITTED, to_status=to, at=AT, cause_event_id="c",
        channel="web", channel_order_id="W-1", customer_id="customer-1")
    return Record(ORDERS_STATUS, "ord-1", event, {}, 0, 1, None)


def run(h: NotifyHandler, table: dict[str, Any], *records: Record) -> Effects:
    effects = Effects()
    for record in records:
        h.handle(record, table, effects)
    return effects


def test_a_confirmation_is_planned_on_every_channel_with_the_inbox_delivered(catalogue):
    table: dict[str, Any] = {}
    effects = run(handler(catalogue), table, order(), change(OrderStatus.RESERVED))
    (row,) = effects.rows
    assert isinstance(row, PlanRow)
    assert (row.trigger, row.policy, row.chain) == ("confirmation", "all",
                                                    ("wechat", "sms", "email"))
    assert {d.channel: d.state for d in row.deliveries} == {
        "wechat": "pending", "sms": "pending", "email": "pending"}
    assert row.inbox is not None and "W-1" in row.inbox[2]
    assert set(row.payloads) == {"wechat", "sms", "email", "inapp"}
    assert row.payloads["sms"]["recipient"] == "+8613800138000"
    assert row.payloads["sms"]["templates"].keys() >= {"aliyun", "tencent"}
    ((out, kind),) = effects.out
    outcome = NotificationDelivered.model_validate_json(out.value)
    assert (out.topic, kind, outcome.channel, outcome.recipient) == (
        NOTIFICATIONS_OUTCOMES, "NotificationDelivered", "inapp", "cust***")
    assert isinstance(table["ord-1"], domain.OrderView)


def test_the_customers_locale_chooses_the_words(catalogue):
    zh = run(handler(catalogue), {}, order(), change(OrderStatus.RESERVED)).rows[0]
    en = run(handler(catalogue), {}, order(locale="en-US"), change(OrderStatus.RESERVED)
             ).rows[0]
    assert zh.payloads["email"]["subject"] != en.payloads["email"]["subject"]
    assert "17:00" in zh.payloads["email"]["text"] and "17:00" in en.payloads["email"]["text"]


def test_a_change_before_its_order_waits_and_is_told_when_it_comes(catalogue):
    table: dict[str, Any] = {}
    h = handler(catalogue)
    early = run(h, table, change(OrderStatus.RESERVED))
    assert (early.rows, early.out) == ([], [])
    assert isinstance(table["ord-1"], domain.Waiting)
    later = run(h, table, order())
    assert [r.status for r in later.rows] == ["RESERVED"]


def test_a_replay_plans_nothing_new_and_a_fresh_decision_gives_the_same_ids(catalogue):
    table: dict[str, Any] = {}
    h = handler(catalogue)
    first = run(h, table, order(), change(OrderStatus.RESERVED))
    assert run(h, table, change(OrderStatus.RESERVED)).rows == []
    again = run(handler(catalogue), {}, order(), change(OrderStatus.RESERVED))
    assert [d.message_id for d in first.rows[0].deliveries] == [
        d.message_id for d in again.rows[0].deliveries]


def test_a_status_customers_do_not_hear_about_writes_nothing(catalogue):
    effects = run(handler(catalogue), {}, order(), change(OrderStatus.PACKED))
    assert (effects.rows, effects.out) == ([], [])


def test_failover_starts_with_the_first_channel_only(catalogue):
    effects = run(handler(catalogue), {}, order(), change(OrderStatus.PICKED_UP))
    (row,) = effects.rows
    assert [d.channel for d in row.deliveries] == ["wechat"]
