"""Notifier's stream adapter: render, deliver once, report the outcome."""

from __future__ import annotations

from services.notifier import domain, store
from services.notifier.app import app, runtime, status_changes
from shared.events import NotificationDelivered, derive_id
from shared.runtime import Record
from shared.topics import NOTIFICATIONS_OUTCOMES


def _mask(customer_id: str) -> str:
    return customer_id[:2] + "***" if len(customer_id) > 2 else "***"


async def notify(record: Record) -> None:
    change = record.value
    message = domain.in_app_message(change)
    if message is None:
        return
    await store.deliver_in_app(await runtime.db.pool(), message)
    # Re-sent unchanged (same id) on a replay, so the outcome is never missing.
    await runtime.send(NOTIFICATIONS_OUTCOMES, change.order_id, NotificationDelivered(
        event_id=derive_id("outcome", message.message_id),
        correlation_id=change.order_id,
        order_id=change.order_id,
        status=change.to_status,
        channel="inapp",
        recipient=_mask(change.customer_id),
        provider_message_id=message.message_id,
    ))


@app.agent(status_changes, concurrency=1)
async def notify_customers(stream):
    await runtime.consume(stream, notify)
