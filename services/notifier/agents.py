"""Notifier's stream handler: keep the order projection, plan each change customers hear
about, write its deliveries. The rules live in domain.py; the words in templates.py; the
sending in sender.py (outside the partition loop); the batching in shared/batchloop.py."""

from __future__ import annotations

import json
from collections.abc import Callable, MutableMapping, Sequence

import asyncpg

from services.notifier import compose, domain, store, tips
from services.notifier.metrics import NotifierMetrics
from shared.batchloop import Effects
from shared.events import NotificationDelivered, OrderSubmitted, derive_id
from shared.policy import Record
from shared.topics import NOTIFICATIONS_OUTCOMES

#: (skus, locale) -> (product names by SKU, the order's product tips)
Words = Callable[[Sequence[str], str], tuple[dict[str, str], list[str]]]


def catalogue_words(skus: Sequence[str], locale: str) -> tuple[dict[str, str], list[str]]:
    """Product names and tips from the shipped tips catalogue."""
    return {sku: tips.name_for(sku, locale) for sku in skus}, tips.tips_for(skus, locale)


def encode_state(state: domain.State) -> str:
    return state.model_dump_json()


def decode_state(raw: str) -> domain.State:
    return domain.load_state(json.loads(raw))


class NotifyHandler:
    """``orders.submitted`` and ``orders.status`` (both keyed by order id) → the projection
    (order_id → :class:`domain.OrderView`, or :class:`domain.Waiting`) and, for each change
    customers hear about, one notification row, its first deliveries and its in-app message.
    Ids come from (order, status, channel): a replay writes nothing new."""

    def __init__(self, rules: domain.Rules, templates: compose.Templates, words: Words,
                 metrics: NotifierMetrics, *, wake: Callable[[], None] = lambda: None,
                 max_waiting: int = 50) -> None:
        self.rules = rules
        self.templates = templates
        self.words = words
        self.metrics = metrics
        self.wake = wake
        self.max_waiting = max_waiting

    def state_key(self, record: Record) -> str | None:
        return record.value.order_id

    def handle(self, record: Record, table: MutableMapping[str, domain.State],
               effects: Effects) -> None:
        event = record.value
        before = table.get(event.order_id)
        if isinstance(event, OrderSubmitted):
            outcome = domain.on_submitted(before, event)
        else:
            outcome = domain.on_change(before, event, max_waiting=self.max_waiting)
        for view, change in outcome.told:
            if domain.trigger_for(change.to_status, view.channel, self.rules) is None:
                continue  # customers do not hear about this one: no words to look up
            names, tips = self.words([sku for sku, _ in view.lines], view.locale)
            planned = domain.plan(view, change, self.rules, names, tips)
            if planned is None:
                continue
            row = compose.plan_row(planned, self.templates)
            effects.write(row)
            self.metrics.notifications.labels(planned.trigger,
                                              str(bool(planned.chain)).lower()).inc()
            self.metrics.receipts.labels(domain.INAPP, "inbox", "delivered").inc()
            assert row.inbox is not None
            effects.emit(NOTIFICATIONS_OUTCOMES, view.order_id, NotificationDelivered(
                event_id=derive_id("outcome", row.inbox[0]), correlation_id=view.order_id,
                order_id=view.order_id, status=change.to_status, channel=domain.INAPP,
                recipient=compose.mask(domain.INAPP, view.customer_id),
                message_id=row.inbox[0], provider="inbox", provider_message_id=row.inbox[0]))
        if outcome.state is not None and outcome.state is not before:
            table[event.order_id] = outcome.state  # last: a redelivery before the save re-decides

    async def write(self, con: asyncpg.Connection, rows: list[store.PlanRow]) -> None:
        await store.write_planned(con, rows)
        self.wake()  # the dispatcher sends what is due now
