"""Notifier's stream handler: render, deliver once, report the outcome. The rules live in
domain.py; the batching in shared/batchloop.py; the wiring in app.py."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import asyncpg

from services.notifier import domain, store
from shared.batchloop import Effects
from shared.events import NotificationDelivered, derive_id
from shared.policy import Record
from shared.topics import NOTIFICATIONS_OUTCOMES


def _mask(customer_id: str) -> str:
    return customer_id[:2] + "***" if len(customer_id) > 2 else "***"


class NotifyHandler:
    """One ``orders.status`` change → at most one in-app message and its outcome. Stateless:
    the inbox's message id, derived from (order, status, channel), makes a replay a no-op."""

    def state_key(self, record: Record) -> str | None:
        return None

    def handle(self, record: Record, table: MutableMapping[str, Any],
               effects: Effects) -> None:
        change = record.value
        message = domain.in_app_message(change)
        if message is None:
            return
        effects.write(message)
        # Re-sent unchanged (same id) on a replay, so the outcome is never missing.
        effects.emit(NOTIFICATIONS_OUTCOMES, change.order_id, NotificationDelivered(
            event_id=derive_id("outcome", message.message_id),
            correlation_id=change.order_id,
            order_id=change.order_id,
            status=change.to_status,
            channel="inapp",
            recipient=_mask(change.customer_id),
            provider_message_id=message.message_id,
        ))

    async def write(self, con: asyncpg.Connection, rows: list[domain.InAppMessage]) -> None:
        await store.deliver_in_app(con, rows)
