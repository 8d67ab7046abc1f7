"""Notifier's handler: a status customers hear about becomes one inbox row and one outcome."""

from __future__ import annotations

from datetime import UTC, datetime

from services.notifier.agents import NotifyHandler
from shared.batchloop import Effects
from shared.events import NotificationDelivered, OrderStatus, OrderStatusChanged
from shared.policy import Record
from shared.topics import NOTIFICATIONS_OUTCOMES, ORDERS_STATUS


def change(to: OrderStatus) -> Record:
    event = OrderStatusChanged(
        order_id="ord-1", correlation_id="ord-1", from_status=OrderStatus.SUBMITTED,
        to_status=to, at=datetime(2026, 1, 20, tzinfo=UTC), cause_event_id="c", channel="web",
        channel_order_id="W-1", customer_id="customer-1")
    return Record(topic=ORDERS_STATUS, key="ord-1", value=event, headers={}, partition=0,
                  offset=0, raw=None)


def test_reserved_is_one_inbox_row_and_one_masked_outcome() -> None:
    effects = Effects()
    NotifyHandler().handle(change(OrderStatus.RESERVED), {}, effects)
    ((message,),) = [effects.rows]
    ((out, kind),) = effects.out
    outcome = NotificationDelivered.model_validate_json(out.value)
    assert (out.topic, out.key, kind) == (NOTIFICATIONS_OUTCOMES, b"ord-1",
                                          "NotificationDelivered")
    assert outcome.provider_message_id == message.message_id
    assert outcome.recipient == "cu***"


def test_a_replayed_change_gives_the_same_ids() -> None:
    first, again = Effects(), Effects()
    NotifyHandler().handle(change(OrderStatus.RESERVED), {}, first)
    NotifyHandler().handle(change(OrderStatus.RESERVED), {}, again)
    assert first.rows == again.rows
    assert (NotificationDelivered.model_validate_json(first.out[0][0].value).event_id
            == NotificationDelivered.model_validate_json(again.out[0][0].value).event_id)


def test_a_status_customers_do_not_hear_about_does_nothing() -> None:
    effects = Effects()
    NotifyHandler().handle(change(OrderStatus.PACKED), {}, effects)
    assert (effects.out, effects.rows) == ([], [])
